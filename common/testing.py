"""Helpers for the repo's and the projects' tests."""

import os
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_module(module, *args, cwd=REPO, timeout=600, env=None):
    """Runs ``python -m module args`` as a user would; returns the CompletedProcess."""
    return subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=cwd, capture_output=True, text=True, timeout=timeout,
        env={**os.environ, **(env or {})},
    )


def run_script(path, *args, cwd=None, timeout=600):
    """Runs ``python path args`` (e.g. a project's train_net.py) from ``cwd``."""
    return subprocess.run(
        [sys.executable, path, *args],
        cwd=cwd or os.path.dirname(os.path.abspath(path)), capture_output=True, text=True,
        timeout=timeout,
    )
