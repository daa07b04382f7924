"""Every project's package stands alone: it imports neither ``common`` nor another project,
all projects import together in one process without registry clashes, and a package copied
on its own into an empty folder imports and builds its model from detectron2 alone."""

import ast
import glob
import os
import shutil
import subprocess
import sys

import pytest

from common.projects import REPO, config_fns

PACKAGES = sorted(
    p for p in glob.glob(os.path.join(REPO, "projects", "*", "*", "__init__.py"))
    if os.path.basename(os.path.dirname(p)) not in ("tests", "configs", "tools")
)
NAMES = [os.path.basename(os.path.dirname(p)) for p in PACKAGES]
ALLOWED = {"torch", "torchvision", "detectron2", "fvcore", "numpy"}


def _imported_roots(package_dir):
    roots = set()
    for path in glob.glob(os.path.join(package_dir, "**", "*.py"), recursive=True):
        for node in ast.walk(ast.parse(open(path).read(), path)):
            if isinstance(node, ast.Import):
                roots |= {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                roots.add(node.module.split(".")[0])
    return roots


def test_there_are_projects():
    assert "gfl" in NAMES


@pytest.mark.parametrize("init", PACKAGES, ids=NAMES)
def test_package_imports_only_its_dependencies(init):
    roots = _imported_roots(os.path.dirname(init))
    stdlib = set(sys.stdlib_module_names)
    assert roots - stdlib <= ALLOWED, f"imports {sorted(roots - stdlib - ALLOWED)}"


def test_all_projects_import_together_without_registry_clashes():
    # detectron2's registries raise on a second registration of the same name.
    for init in PACKAGES:
        fns = config_fns(init)
        assert fns, f"{init} exports no add_*_config"


@pytest.mark.parametrize("init", PACKAGES, ids=NAMES)
def test_copied_package_works_alone(tmp_path, init):
    """What a researcher does: copy the package next to their own detectron2 code."""
    name = os.path.basename(os.path.dirname(init))
    project = os.path.dirname(os.path.dirname(init))
    (base,) = glob.glob(os.path.join(project, "configs", "Base-*.yaml"))
    shutil.copytree(os.path.dirname(init), tmp_path / name)
    adds = [fn.__name__ for fn in config_fns(init)]
    code = "\n".join([
        "import sys; sys.modules['common'] = None",  # any import of common now fails
        f"import {name}",
        "from detectron2.config import get_cfg",
        "from detectron2.modeling import build_model",
        "cfg = get_cfg()",
        *[f"{name}.{add}(cfg)" for add in adds],
        f"cfg.merge_from_file({base!r})",
        "cfg.MODEL.DEVICE = 'cpu'",
        "build_model(cfg)",
    ])
    r = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True,
                       env={**os.environ, "PYTHONPATH": str(tmp_path)})
    assert r.returncode == 0, r.stderr[-2000:]
