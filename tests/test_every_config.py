"""Every shipped config starts, trains and evaluates, run the way its users run it, and the first
config of each distinct model evaluates its checkpoint again with the same detections
(``harness/config_check.py``: stand-in COCO / CrowdHuman trees, a few iterations); the COCO
configs name ImageNet weights that match their backbone; the mistakes a first COCO or
CrowdHuman run makes get one line. A config added later is covered with no edit.

The ``gpu`` tests (``make gpu-check``) run the same configs on CUDA, and each project's
multi-GPU README command on 2 processes (NCCL)."""

import os
import re
import shlex

import pytest
import torch

from common.projects import REPO, config_files, project_of
from harness.config_check import StandInData, run_config, run_configs, user_command
from harness.projects import load_config

CONFIGS = config_files()
PROJECTS = sorted(os.listdir(os.path.join(REPO, "projects")))
TOY_DATASETS = ("toy_shapes_train", "toy_crowd_train")


def _id(path):
    return os.path.relpath(path, REPO)


def _selected(request, test_name):
    return [item.callspec.params["config"] for item in request.session.items
            if getattr(item, "originalname", None) == test_name and "config" in item.callspec.params]


@pytest.fixture(scope="module")
def cpu_runs(request, tmp_path_factory):
    """The selected configs' runs, two at a time on a CPU of 2+ cores (each process with its
    share of the cores), done once for the module."""
    configs = _selected(request, "test_config_trains_evaluates_and_reloads")
    out = tmp_path_factory.mktemp("configs")
    workers = 2 if (os.cpu_count() or 1) >= 2 else 1
    return {r.config: r for r in run_configs(configs, str(out / "data"), str(out), workers=workers)}


@pytest.mark.slow
@pytest.mark.parametrize("config", CONFIGS, ids=_id)
def test_config_trains_evaluates_and_reloads(cpu_runs, config):
    run = cpu_runs[config]
    assert run.ok, "\n".join(run.problems)


# ------------------------------------------------------------------- pretrained weights
# What detectron2's ImageNet checkpoints were trained with: MSRA's Caffe ResNets (stride in
# the 1x1 conv, BGR, mean subtraction only) and torchvision's (stride in the 3x3 conv, RGB,
# normalised by std), as detectron2's MODEL_ZOO.md and tools/convert-torchvision-to-d2.py state.
CHECKPOINT_CONVENTIONS = {
    "MSRA": {"stride_in_1x1": True, "format": "BGR", "mean": (103.530, 116.280, 123.675),
             "std": (1.0, 1.0, 1.0)},
    "torchvision": {"stride_in_1x1": False, "format": "RGB", "mean": (123.675, 116.280, 103.530),
                    "std": (58.395, 57.120, 57.375)},
    # PSConv's ImageNet PS-ResNets (torchvision-style training), converted by the project's tool
    "PSConv-ImageNet": {"stride_in_1x1": False, "format": "RGB", "mean": (123.675, 116.280, 103.530),
                        "std": (58.395, 57.120, 57.375)},
}
COCO_SIZE_CONFIGS = [c for c in CONFIGS if not set(load_config(c).DATASETS.TRAIN) <= set(TOY_DATASETS)]


def weights_mismatches(cfg):
    """How ``cfg`` disagrees with the conventions of the ImageNet checkpoint it names."""
    weights = cfg.MODEL.WEIGHTS
    kind = [k for k in CHECKPOINT_CONVENTIONS if k in weights]
    depth = re.search(r"R-(\d+)", weights)
    if len(kind) != 1 or not depth or "resnet" not in cfg.MODEL.BACKBONE.NAME:
        return [f"unknown ImageNet checkpoint {weights!r} for {cfg.MODEL.BACKBONE.NAME}: add it here"]
    expected = CHECKPOINT_CONVENTIONS[kind[0]]
    found = {
        "depth": (cfg.MODEL.RESNETS.DEPTH, int(depth.group(1))),
        "STRIDE_IN_1X1": (cfg.MODEL.RESNETS.STRIDE_IN_1X1, expected["stride_in_1x1"]),
        "INPUT.FORMAT": (cfg.INPUT.FORMAT, expected["format"]),
        # AP-Loss keeps the official code's Caffe mean (102.98, 115.95, 122.77): within 1 of MSRA's.
        "PIXEL_MEAN": (cfg.MODEL.PIXEL_MEAN, pytest.approx(expected["mean"], abs=1.0)),
        "PIXEL_STD": (cfg.MODEL.PIXEL_STD, pytest.approx(expected["std"], abs=1e-3)),
    }
    return [f"{key} is {have}, {kind[0]} R-{depth.group(1)} needs {want}"
            for key, (have, want) in found.items() if have != want]


def test_the_coco_and_crowdhuman_configs_are_found():
    expected = [c for c in CONFIGS if project_of(c) and os.sep + "toy" + os.sep not in c]
    assert COCO_SIZE_CONFIGS == expected and len(expected) >= 21


@pytest.mark.parametrize("config", COCO_SIZE_CONFIGS, ids=_id)
def test_weights_match_the_backbone(config):
    assert weights_mismatches(load_config(config)) == []


def test_weights_that_do_not_match_are_caught():
    gfl = os.path.join(REPO, "projects", "GFL", "configs", "gfl_R-50-FPN_1x_coco.yaml")  # torchvision R-50
    msra = load_config(gfl, ["MODEL.WEIGHTS", "detectron2://ImageNetPretrained/MSRA/R-101.pkl"])
    assert [m.split(" is ")[0] for m in weights_mismatches(msra)] == [
        "depth", "STRIDE_IN_1X1", "INPUT.FORMAT", "PIXEL_MEAN", "PIXEL_STD"]
    assert weights_mismatches(load_config(gfl, ["MODEL.WEIGHTS", "model_final.pth"]))


# ------------------------------------------------------------------- bad input, one line
def _first_coco_config():
    return next(c for c in COCO_SIZE_CONFIGS if "coco_2017_train" in load_config(c).DATASETS.TRAIN)


def _first_crowdhuman_config():
    return next(c for c in COCO_SIZE_CONFIGS if "crowdhuman_train" in load_config(c).DATASETS.TRAIN)


def _run_as_user(config, *args, env=None):
    import subprocess

    argv, cwd = user_command(config, *args)
    return subprocess.run(argv, cwd=cwd, capture_output=True, text=True, timeout=300,
                          env={**os.environ, **(env or {})})


def _one_line_error(r):
    assert r.returncode == 1 and "Traceback" not in r.stderr, r.stderr[-2000:]
    return r.stderr.strip().splitlines()[-1]


def test_coco_config_without_a_coco_tree_is_one_line(tmp_path):
    r = _run_as_user(_first_coco_config(), "OUTPUT_DIR", str(tmp_path / "out"),
                     env={"DETECTRON2_DATASETS": str(tmp_path / "no_datasets")})
    last = _one_line_error(r)
    assert last.startswith("error: dataset 'coco_2017_train': json_file ") and "not found" in last
    assert "$DETECTRON2_DATASETS" in last


def test_crowdhuman_config_without_registration_is_one_line(tmp_path):
    last = _one_line_error(_run_as_user(_first_crowdhuman_config(), "OUTPUT_DIR", str(tmp_path)))
    assert last.startswith("error: dataset 'crowdhuman_train' is not registered")
    assert "--register-crowdhuman NAME ODGT IMAGE_DIR" in last


# ------------------------------------------------------------------- on a GPU (make gpu-check)
@pytest.fixture(scope="module")
def cuda_runs(request, tmp_path_factory):
    configs = _selected(request, "test_config_on_cuda")
    out = tmp_path_factory.mktemp("cuda_configs")
    return {r.config: r for r in run_configs(configs, str(out / "data"), str(out), device="cuda")}


@pytest.mark.gpu
@pytest.mark.parametrize("config", CONFIGS, ids=_id)
def test_config_on_cuda(cuda_runs, config):
    """The same small run on CUDA (with mixed precision wherever the config enables it)."""
    run = cuda_runs[config]
    assert run.ok, "\n".join(run.problems)


def readme_multi_gpu_command(project):
    """The first ``python train_net.py --config-file ... --num-gpus N ...`` of a project's
    README (continuation lines joined): its config and its ``KEY VALUE`` overrides, without the
    dataset registrations (the stand-ins bring their own)."""
    text = open(os.path.join(REPO, "projects", project, "README.md")).read().replace("\\\n", " ")
    for line in text.splitlines():
        if "train_net.py" in line and "--num-gpus" in line and "--eval-only" not in line:
            words = shlex.split(line.split("#")[0])
            words = words[words.index("train_net.py") + 1:]
            config, opts = None, []
            while words:
                w = words.pop(0)
                if w == "--config-file":
                    config = words.pop(0)
                elif w in ("--register-coco", "--register-crowdhuman"):
                    del words[:3]
                elif w == "--num-gpus":
                    words.pop(0)
                elif w.startswith("--") or w == "...":
                    continue
                else:
                    opts += [w, words.pop(0)]
            return os.path.join(REPO, "projects", project, config), opts
    return None


@pytest.mark.parametrize("project", PROJECTS)
def test_readme_multi_gpu_command_names_a_shipped_config(project):
    found = readme_multi_gpu_command(project)
    assert found, f"projects/{project}/README.md has no 'train_net.py ... --num-gpus N' command"
    config, opts = found
    assert config in CONFIGS
    load_config(config, opts)  # its overrides are valid keys and values


@pytest.mark.gpu
@pytest.mark.parametrize("project", PROJECTS)
def test_readme_multi_gpu_command_on_two_processes(project, tmp_path):
    if torch.cuda.device_count() < 2:
        pytest.skip("2 processes with NCCL need 2 GPUs")
    config, opts = readme_multi_gpu_command(project)
    run = run_config(config, StandInData(str(tmp_path / "data")), str(tmp_path / "out"), device="cuda",
                     launch_args=("--num-gpus", "2"), opts=opts)
    assert run.ok, "\n".join(run.problems)
    assert project_of(config) == project


def test_a_toy_val_subset_is_written_once_while_other_runs_read_it(tmp_path):
    # Two configs run at a time: rewriting the file under a reading process broke its eval.
    data = StandInData(str(tmp_path))
    for name in ("toy_shapes_val", "toy_crowd_val"):
        _, args, subset = data.provide(name)
        path = args[2]
        stamp = os.stat(path).st_mtime_ns
        assert data.provide(name) == ({}, args, subset)
        assert os.stat(path).st_mtime_ns == stamp
        assert not os.path.exists(path + ".tmp")
