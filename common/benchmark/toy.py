"""``make toy``: trains each toy config to its full schedule through its real entry point, once
per seed, evaluates it on its test set, and writes a results table of ``mean ± std (n)``.

    python -m common.benchmark.toy --out output/toy                 # the baselines, 3 seeds
    python -m common.benchmark.toy --configs projects/GFL/configs/toy/gfl_R-18-FPN_toy.yaml
    python -m common.benchmark.toy --configs CONFIG --seeds 0 -- MODEL.GFL.ANCHOR_SCALE 8.0

A seed is the config's ``SEED``: it sets the initialisation and the order in which the training
images are drawn (detectron2 seeds its sampler from it). Seed ``s`` of ``CONFIG`` trains into
``<out>/<config stem>_seed<s>`` (log: ``<out>/<config stem>_seed<s>.log``); a run whose
``result.json`` is there already (written when it finished, with the same command and config
file settings) is read, not trained again, so an interrupted benchmark or one given more seeds
later trains only what is missing; ``--retrain`` trains every run again (do so after changing
a model's code). A run interrupted after a checkpoint resumes from it (``--resume``; its
``result.json`` says ``"resumed": true`` and gives no minutes: the data order restarts at the
resumed iteration, so it is not bit-identical to an uninterrupted run). Writes
``<out>/toy.md`` and ``<out>/toy.json``.
"""

import argparse
import hashlib
import json
import math
import os
import platform
import shutil
import subprocess
import time

import yaml

from common.projects import BASELINE_TOY_CONFIGS, REPO, train_command

TABLE_COLUMNS = {
    "bbox": ("AP", "AP50", "AP75", "APs", "APm", "APl"),
    "crowd": ("AP", "MR", "recall", "JI"),  # MR is MR^-2 (lower is better)
}
# Mask models' COCO mask AP (a second table; the box AP of the same runs is in the first).
SEGM_COLUMNS = ("AP", "AP50", "AP75", "APs", "APm", "APl")
DEFAULT_SEEDS = (0, 1, 2)


def config_digest(path):
    """The settings of config file ``path`` and its ``_BASE_`` files (parsed, so comments do
    not count): a finished run is reused only while they are unchanged."""
    with open(path) as f:
        node = yaml.safe_load(f) or {}
    base = node.get("_BASE_")
    parent = config_digest(os.path.join(os.path.dirname(path), base)) if base else ""
    own = json.dumps(node, sort_keys=True, default=str)
    return hashlib.sha256((parent + own).encode()).hexdigest()[:16]


def _read_json(path):
    with open(path) as f:
        return json.load(f)


def run_one(path, out, opts=(), seed=0, retrain=False):
    """Trains and evaluates ``path`` with ``SEED seed``; returns its metrics and timing."""
    name = f"{os.path.splitext(os.path.basename(path))[0]}_seed{seed}"
    out_dir = os.path.join(out, name)
    result_file = os.path.join(out_dir, "result.json")
    cmd = train_command(path, "OUTPUT_DIR", os.path.abspath(out_dir), *opts, "SEED", str(seed))
    command = " ".join(["python"] + cmd[1:]).replace(REPO + os.sep, "")
    if os.path.isfile(result_file) and not retrain:
        result = _read_json(result_file)
        if result["command"] == command and result.get("config_digest") == config_digest(path):
            return result
    # What this folder trains: an interrupted run of the same experiment resumes from its last
    # checkpoint; anything else there (stale, or no checkpoint yet) starts again from scratch.
    marker = os.path.join(out_dir, "toy_run.json")
    key = {"command": command, "config_digest": config_digest(path)}
    resume = (not retrain and os.path.isfile(os.path.join(out_dir, "last_checkpoint"))
              and os.path.isfile(marker) and _read_json(marker) == key)
    if os.path.isdir(out_dir) and not resume:
        shutil.rmtree(out_dir)
    os.makedirs(out_dir, exist_ok=True)
    with open(marker, "w") as f:
        json.dump(key, f)
    if resume:
        i = cmd.index("--config-file") + 2
        cmd = cmd[:i] + ["--resume"] + cmd[i:]
    start = time.time()
    with open(os.path.join(out, name + ".log"), "a" if resume else "w") as log:
        subprocess.run(cmd, cwd=REPO, stdout=log, stderr=subprocess.STDOUT, check=True)
    minutes = math.nan if resume else (time.time() - start) / 60
    with open(os.path.join(out_dir, "metrics.json")) as f:
        metrics = [json.loads(line) for line in f]
    # COCO box AP, or the crowd metrics (CrowdHuman-style datasets such as toy_crowd).
    final = [m for m in metrics if "bbox/AP" in m or "crowd/AP" in m][-1]
    task = "bbox" if "bbox/AP" in final else "crowd"
    times = [m["time"] for m in metrics if "time" in m]
    segm = {k: final[f"segm/{k}"] for k in SEGM_COLUMNS} if "segm/AP" in final else None
    result = {
        "config": os.path.relpath(path, REPO),
        "seed": seed,
        "task": task,
        **{k: final[f"{task}/{k}"] for k in TABLE_COLUMNS[task]},
        "segm": segm,
        "minutes": minutes,
        "resumed": resume,
        "s_per_iter": sum(times) / max(len(times), 1),
        "iters": max(m["iteration"] for m in metrics if "total_loss" in m) + 1,
        "command": command,
        "config_digest": config_digest(path),
    }
    with open(result_file, "w") as f:
        json.dump(result, f, indent=1)
    return result


def mean_std(values):
    """Mean and sample standard deviation (n - 1; NaN for one value) of the non-NaN values."""
    values = [v for v in values if v == v]
    if not values:
        return math.nan, math.nan, 0
    mean = sum(values) / len(values)
    if len(values) < 2:
        return mean, math.nan, len(values)
    return mean, math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1)), len(values)


def fmt(values):
    """``mean ± std (n)`` of a metric over seeds (``n/a`` where no object has that size)."""
    mean, std, n = mean_std(values)
    if n == 0:
        return "n/a"
    return f"{mean:.1f}" if n == 1 else f"{mean:.1f} ± {std:.1f} ({n})"


def summarise(runs):
    """One row per config, in the order given, each metric as a list over its seeds."""
    by_config = {}
    for r in runs:
        by_config.setdefault(r["config"], []).append(r)
    rows = []
    for config, rs in by_config.items():
        row = {"config": config, "task": rs[0]["task"], "seeds": [r["seed"] for r in rs],
               "iters": rs[0]["iters"], "command": rs[0]["command"]}
        for key in TABLE_COLUMNS[row["task"]] + ("minutes", "s_per_iter"):
            row[key] = [r[key] for r in rs]
        row["segm"] = {k: [r["segm"][k] for r in rs] for k in SEGM_COLUMNS} if rs[0]["segm"] else None
        rows.append(row)
    return rows


def table(rows, machine):
    lines = [
        f"Machine: {machine}. Command: `make toy` (or `python -m common.benchmark.toy "
        "--configs CONFIG --seeds ...`); each run's own command is in toy.json. "
        "Metrics: mean ± sample std (number of seeds).",
    ]
    for task, columns in TABLE_COLUMNS.items():
        task_rows = [r for r in rows if r["task"] == task]
        if not task_rows:
            continue
        names = [c.replace("MR", "MR^-2") for c in columns]
        lines += ["", "| config | " + " | ".join(names) + " | iters | minutes / run | s/iter |",
                  "|---|" + "---:|" * (len(columns) + 3)]
        for r in task_rows:
            lines.append(
                f"| {r['config']} | " + " | ".join(fmt(r[c]) for c in columns)
                + f" | {r['iters']} | {mean_std(r['minutes'])[0]:.1f}"
                + f" | {mean_std(r['s_per_iter'])[0]:.2f} |"
            )
    segm_rows = [r for r in rows if r.get("segm")]
    if segm_rows:
        lines += ["", "| config | mask AP | AP50 | AP75 | APs | APm | APl |", "|---|" + "---:|" * 6]
        for r in segm_rows:
            lines.append(f"| {r['config']} | " + " | ".join(fmt(r["segm"][c]) for c in SEGM_COLUMNS)
                         + " |")
    return "\n".join(lines) + "\n"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="output/toy")
    parser.add_argument("--configs", nargs="*", help="default: the baselines' toy configs")
    parser.add_argument("--seeds", nargs="+", type=int, default=list(DEFAULT_SEEDS),
                        help="one full training per seed and config (default: 0 1 2)")
    parser.add_argument("--retrain", action="store_true",
                        help="train runs that already have a result in --out again")
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides for every run")
    args = parser.parse_args(argv)
    if args.opts[:1] == ["--"]:  # ends the list of --configs / --seeds
        args.opts = args.opts[1:]
    if "SEED" in args.opts[::2]:
        parser.error("give seeds with --seeds, not as a SEED override")
    os.makedirs(args.out, exist_ok=True)
    runs = []
    for path in args.configs or BASELINE_TOY_CONFIGS:
        for seed in args.seeds:
            runs.append(run_one(path, args.out, args.opts, seed, args.retrain))
            print(json.dumps(runs[-1]), flush=True)
    machine = f"{platform.machine()}, {os.cpu_count()} CPU threads"
    rows = summarise(runs)
    with open(os.path.join(args.out, "toy.json"), "w") as f:
        json.dump({"machine": machine, "rows": rows, "runs": runs}, f, indent=1)
    text = table(rows, machine)
    with open(os.path.join(args.out, "toy.md"), "w") as f:
        f.write(text)
    print(text)


if __name__ == "__main__":
    main()
