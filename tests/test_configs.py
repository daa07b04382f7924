"""Every config in the repo parses with yaml.safe_load, loads, and builds a model."""

import os

import pytest
import yaml
from detectron2.modeling import build_model

from common.projects import REPO, config_files, load_config

CONFIGS = config_files(include_base=True)


def test_there_are_configs():
    assert len(CONFIGS) >= 4


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: os.path.relpath(p, REPO))
def test_config_is_safe_yaml(path):
    with open(path) as f:
        yaml.safe_load(f)  # v0.6 falls back to unsafe_load; ours must never need it


@pytest.mark.parametrize("path", config_files(), ids=lambda p: os.path.relpath(p, REPO))
def test_config_loads_and_builds(path):
    cfg = load_config(path, ["MODEL.DEVICE", "cpu"])
    model = build_model(cfg)
    assert sum(p.numel() for p in model.parameters()) > 0
