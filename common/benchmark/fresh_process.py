"""Benchmarks whose variants each run in a fresh process, so that each one's peak memory is its
own: the tool calls itself with ``--<flag> <variant>`` and prints one JSON line."""

import json
import resource
import subprocess
import sys

import torch

__all__ = ["peak_bytes", "run_in_fresh_processes"]


def peak_bytes(device):
    """The process's peak memory so far: CUDA allocations, or the peak resident set (CPU)."""
    if device == "cuda":
        return torch.cuda.max_memory_allocated()
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux


def run_in_fresh_processes(script, flag, variants, args):
    """``python script --flag v *args`` for each variant ``v``; the JSON of each one's last
    stdout line, in order. A failing variant raises with its stderr."""
    rows = []
    for v in variants:
        r = subprocess.run([sys.executable, script, f"--{flag}", v, *map(str, args)],
                           capture_output=True, text=True)
        if r.returncode:
            raise RuntimeError(f"{script} --{flag} {v} failed:\n{r.stderr[-3000:]}")
        rows.append(json.loads(r.stdout.strip().splitlines()[-1]))
    return rows
