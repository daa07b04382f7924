"""Tests marked ``gpu`` (run by ``make gpu-check``) skip where no CUDA device is visible.

A ``make test`` run trains every config and writes several GB of checkpoints under pytest's
temporary folder; they are deleted when the session ends (logs and metrics stay for a failed
test to be read), and pytest keeps only the last run's folder (pyproject.toml), so repeated
runs do not fill the disk."""

import os
import pathlib

import pytest
import torch

if os.environ.get("PYTEST_XDIST_WORKER"):
    # `make test` runs pytest-xdist workers: each gets its share of the cores, for its own torch
    # and for the processes its tests start (several OpenMP pools on the same cores are 3-5x
    # slower than one).
    _threads = max(1, (os.cpu_count() or 1) // int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1")))
    os.environ["OMP_NUM_THREADS"] = os.environ["MKL_NUM_THREADS"] = str(_threads)
    torch.set_num_threads(_threads)


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="no CUDA GPU visible")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


def pytest_sessionfinish(session, exitstatus):
    factory = getattr(session.config, "_tmp_path_factory", None)
    if factory is None or factory._basetemp is None:  # no test asked for a temporary folder
        return
    for checkpoint in pathlib.Path(factory._basetemp).rglob("*.pth"):
        checkpoint.unlink(missing_ok=True)
