"""Each config's entry, as its ``train_net.py`` declares it: ``TRAINER`` (the Trainer class it
trains with) and ``CONFIG_FNS`` (the functions that add its package's config keys; importing
the script imports the package, which registers its modules). The baselines' entry is
``common/train_net.py``."""

import importlib
import importlib.util
import os
import sys

from common.projects import REPO, project_of

_ENTRIES = {}


def entry(path):
    """``(TRAINER, CONFIG_FNS)`` of the ``train_net.py`` that trains the config ``path``."""
    project = project_of(path)
    if project not in _ENTRIES:
        if project is None:
            module = importlib.import_module("common.train_net")
        else:
            root = os.path.join(REPO, "projects", project)
            if root not in sys.path:
                sys.path.insert(0, root)  # the project's package, as train_net.py imports it
            spec = importlib.util.spec_from_file_location(f"train_net_{project}",
                                                          os.path.join(root, "train_net.py"))
            module = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(module)
        missing = [n for n in ("TRAINER", "CONFIG_FNS") if not hasattr(module, n)]
        if missing:
            raise AttributeError(f"{module.__file__} must declare {' and '.join(missing)}")
        _ENTRIES[project] = (module.TRAINER, tuple(module.CONFIG_FNS))
    return _ENTRIES[project]


def trainer_class(path):
    return entry(path)[0]


def config_fns(path):
    return entry(path)[1]


def load_config(path, opts=()):
    """The config ``path`` as its ``train_net.py`` builds it (``setup()`` without the side
    effects): get_cfg() + the engine's and the project's keys + the file + ``opts``, with
    NUM_CLASSES following the training set unless ``opts`` sets it; not frozen."""
    from detectron2.config import get_cfg

    from common.engine import add_common_config, set_num_classes

    cfg = get_cfg()
    add_common_config(cfg)
    for fn in config_fns(path):
        fn(cfg)
    cfg.merge_from_file(path)
    cfg.merge_from_list(list(opts))
    set_num_classes(cfg, opts)
    return cfg
