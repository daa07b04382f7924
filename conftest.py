"""Tests marked ``gpu`` (run by ``make gpu-check``) skip where no CUDA device is visible.

A ``make test`` run trains every config and writes several GB of checkpoints under pytest's
temporary folder; they are deleted when the session ends (logs and metrics stay for a failed
test to be read), and pytest keeps only the last run's folder (pyproject.toml), so repeated
runs do not fill the disk."""

import pathlib

import pytest
import torch


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
