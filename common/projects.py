"""Finds the configs of the baselines and of every project, with the config functions they need."""

import glob
import importlib
import importlib.util
import os
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BASELINE_TOY_CONFIGS = [
    os.path.join(REPO, "common", "configs", f"{n}_R-18-FPN_toy.yaml")
    for n in ("retinanet", "fcos", "faster_rcnn")
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


def config_fns(path):
    """The ``add_<x>_config`` functions exported by the package of the project holding ``path``
    (none for the baselines' configs). Importing the package registers its modules."""
    project = project_of(path)
    if project is None:
        return []
    root = os.path.join(REPO, "projects", project)
    if root not in sys.path:
        sys.path.insert(0, root)
    fns = []
    for init in sorted(glob.glob(os.path.join(root, "*", "__init__.py"))):
        if os.path.basename(os.path.dirname(init)) in ("tests", "configs"):
            continue
        pkg = importlib.import_module(os.path.basename(os.path.dirname(init)))
        fns += [getattr(pkg, n) for n in dir(pkg) if n.startswith("add_") and n.endswith("_config")]
    return fns


_TRAINERS = {}


def trainer_class(path):
    """The Trainer that ``path`` trains with: the subclass of ``common.engine.Trainer`` that its
    project's ``train_net.py`` defines (it may build its own data loader), else the shared one."""
    project = project_of(path)
    if project is None:
        from common.engine import Trainer

        return Trainer
    if project not in _TRAINERS:
        config_fns(path)  # puts the project's package on sys.path
        script = os.path.join(REPO, "projects", project, "train_net.py")
        spec = importlib.util.spec_from_file_location(f"train_net_{project}", script)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        from common.engine import Trainer

        own = [c for c in vars(module).values() if isinstance(c, type) and issubclass(c, Trainer)
               and c.__module__ == module.__name__]  # e.g. AP-Loss's APLossTrainer
        _TRAINERS[project] = own[0] if own else Trainer
    return _TRAINERS[project]


def config_files(include_base=False):
    """Every config file the repo ships (the baselines' and every project's, COCO / CrowdHuman
    and toy), sorted; ``Base-*`` files, which are only inherited, if ``include_base``."""
    paths = glob.glob(os.path.join(REPO, "common", "configs", "**", "*.yaml"), recursive=True)
    paths += glob.glob(os.path.join(REPO, "projects", "*", "configs", "**", "*.yaml"), recursive=True)
    return sorted(p for p in paths if include_base or not os.path.basename(p).startswith("Base-"))


def project_toy_configs():
    return sorted(glob.glob(os.path.join(REPO, "projects", "*", "configs", "toy", "*.yaml")))


def load_config(path, opts=()):
    """get_cfg() + the engine's and the project's keys + the file, NUM_CLASSES from the training
    set's metadata (as ``setup()``), then ``opts``; not frozen."""
    from detectron2.config import get_cfg

    from common.engine import add_common_config, set_num_classes

    cfg = get_cfg()
    add_common_config(cfg)
    for fn in config_fns(path):
        fn(cfg)
    cfg.merge_from_file(path)
    set_num_classes(cfg)
    cfg.merge_from_list(list(opts))
    return cfg
