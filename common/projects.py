"""Where the configs of the baselines and of every project are, and the command that trains
each. Paths only: common imports no project (their entries are found by ``harness.projects``)."""

import glob
import os
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BASELINE_TOY_CONFIGS = [
    os.path.join(REPO, "common", "configs", f"{n}_R-18-FPN_toy.yaml")
    for n in ("retinanet", "fcos", "faster_rcnn", "mask_rcnn")
]


def project_of(path):
    rel = os.path.relpath(os.path.abspath(path), REPO).split(os.sep)
    return rel[1] if rel[0] == "projects" else None


def train_command(path, *opts):
    """The command that trains ``path``: its project's ``train_net.py``, or the baselines'
    ``python -m common.train_net``; run it from the repo root."""
    project = project_of(path)
    script = ["-m", "common.train_net"] if project is None else [
        os.path.join(REPO, "projects", project, "train_net.py")
    ]
    return [sys.executable, *script, "--config-file", os.path.abspath(path), *opts]


def config_files(include_base=False):
    """Every config file the repo ships (the baselines' and every project's, COCO / CrowdHuman
    and toy), sorted; ``Base-*`` files, which are only inherited, if ``include_base``."""
    paths = glob.glob(os.path.join(REPO, "common", "configs", "**", "*.yaml"), recursive=True)
    paths += glob.glob(os.path.join(REPO, "projects", "*", "configs", "**", "*.yaml"), recursive=True)
    return sorted(p for p in paths if include_base or not os.path.basename(p).startswith("Base-"))


def project_toy_configs():
    return sorted(glob.glob(os.path.join(REPO, "projects", "*", "configs", "toy", "*.yaml")))
