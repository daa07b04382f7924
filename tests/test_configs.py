"""Every config in the repo parses with yaml.safe_load, loads, and builds a model."""

import os
import re

import pytest
import yaml
from detectron2.modeling import build_model

from common.projects import REPO, config_files
from harness.projects import load_config

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


RETINANET_TOY = os.path.join(REPO, "common", "configs", "retinanet_R-18-FPN_toy.yaml")  # 6 classes


def _setup(tmp_path, *argv):
    from common.engine import default_argument_parser, setup

    return setup(default_argument_parser().parse_args(
        ["--config-file", RETINANET_TOY, *argv, "OUTPUT_DIR", str(tmp_path)]))


def test_num_classes_follows_the_training_set_in_setup_and_load_config(tmp_path):
    # The file does not set it (detectron2's default: 80); toy_shapes has 6 classes.
    assert _setup(tmp_path).MODEL.RETINANET.NUM_CLASSES == 6
    assert load_config(RETINANET_TOY).MODEL.RETINANET.NUM_CLASSES == 6


def test_num_classes_on_the_command_line_wins_in_setup_and_load_config(tmp_path):
    opts = ["MODEL.RETINANET.NUM_CLASSES", "3"]
    weights = tmp_path / "model.pth"
    weights.write_bytes(b"")
    cfg = _setup(tmp_path, "--eval-only", "MODEL.WEIGHTS", str(weights), *opts)
    assert cfg.MODEL.RETINANET.NUM_CLASSES == 3
    assert load_config(RETINANET_TOY, opts).MODEL.RETINANET.NUM_CLASSES == 3


def test_training_with_another_num_classes_than_its_training_set_fails_in_one_line(tmp_path):
    with pytest.raises(SystemExit, match="error: MODEL.RETINANET.NUM_CLASSES is 3 on the command "
                                         "line, but the training set toy_shapes_train has 6 classes"):
        _setup(tmp_path, "MODEL.RETINANET.NUM_CLASSES", "3")
    assert _setup(tmp_path, "MODEL.RETINANET.NUM_CLASSES", "6").MODEL.RETINANET.NUM_CLASSES == 6


def test_a_training_folder_of_another_experiment_is_refused(tmp_path):
    """The same config file trained on other data (or another model) into the same folder
    overwrote the earlier run, and --resume crashed inside the optimizer."""
    _setup(tmp_path)  # writes tmp_path/config.yaml, as every training run does
    assert _setup(tmp_path, "SOLVER.MAX_ITER", "7").SOLVER.MAX_ITER == 7  # a schedule change is fine
    for argv, difference in [
        (["MODEL.RETINANET.FOCAL_LOSS_GAMMA", "3.0"],
         "MODEL.RETINANET.FOCAL_LOSS_GAMMA is 2.0 there, 3.0 here"),
        (["--resume", "DATASETS.TRAIN", "('toy_shapes_val',)"],
         "DATASETS.TRAIN is ['toy_shapes_train'] there"),
    ]:
        with pytest.raises(SystemExit, match=re.escape(f"holds another experiment ({difference}")):
            _setup(tmp_path, *argv)


def test_eval_only_writes_beside_the_run_not_over_it(tmp_path):
    config = (_setup(tmp_path), (tmp_path / "config.yaml").read_text())[1]
    weights = tmp_path / "model.pth"
    weights.write_bytes(b"")
    cfg = _setup(tmp_path, "--eval-only", "MODEL.WEIGHTS", str(weights))
    assert cfg.OUTPUT_DIR == str(tmp_path / "eval_only")
    assert (tmp_path / "config.yaml").read_text() == config
    assert (tmp_path / "eval_only" / "config.yaml").is_file()


def test_config_file_names_are_unique_across_the_repo():
    """The stem names the default output folder (output/<stem>): two projects shipping the same
    name shared one folder (AugFPN's and InterNet's Faster R-CNN baselines did)."""
    from collections import Counter

    stems = Counter(os.path.splitext(os.path.basename(p))[0] for p in config_files())
    assert [s for s, n in stems.items() if n > 1] == []
