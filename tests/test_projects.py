"""Every project's package stands alone: it imports neither ``common`` nor another project,
all projects import together in one process without registry clashes, and a package copied
on its own into an empty folder trains a step and infers with detectron2 alone."""

import ast
import glob
import os
import shutil
import subprocess
import sys

import pytest

from common.projects import REPO
from harness.projects import config_fns, entry

PACKAGES = sorted(
    p for p in glob.glob(os.path.join(REPO, "projects", "*", "*", "__init__.py"))
    if os.path.basename(os.path.dirname(p)) not in ("tests", "configs", "tools")
)
NAMES = [os.path.basename(os.path.dirname(p)) for p in PACKAGES]
ALLOWED = {"torch", "torchvision", "detectron2", "fvcore", "numpy"}


def _imported_roots_of_file(path):
    roots = set()
    for node in ast.walk(ast.parse(open(path).read(), path)):
        if isinstance(node, ast.Import):
            roots |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            roots.add(node.module.split(".")[0])
    return roots


def _imported_roots(package_dir):
    return set().union(*(_imported_roots_of_file(p)
                         for p in glob.glob(os.path.join(package_dir, "**", "*.py"), recursive=True)))


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
def test_train_net_declares_its_entry(init):
    """The tools find a project through what its train_net.py declares: the Trainer it trains
    with, and every add_*_config its package exports."""
    from common.engine import Trainer

    trainer, fns = entry(init)
    assert isinstance(trainer, type) and issubclass(trainer, Trainer)
    package = sys.modules[os.path.basename(os.path.dirname(init))]
    exported = {getattr(package, n) for n in dir(package) if n.startswith("add_") and n.endswith("_config")}
    assert set(fns) == exported


def test_common_never_imports_a_project_or_the_harness():
    """The arrow points from the projects (and the harness) to common, in fact: no module of
    common imports the harness or loads code by path, and importing every module of common
    loads no project."""
    sources = glob.glob(os.path.join(REPO, "common", "**", "*.py"), recursive=True)
    for path in sources:
        roots = _imported_roots_of_file(path)
        assert not roots & {"harness", "importlib", "runpy"}, f"{path} imports {roots}"
    modules = sorted("common." + os.path.relpath(p, os.path.join(REPO, "common"))[:-3].replace(os.sep, ".")
                     .removesuffix(".__init__") for p in sources)
    code = "\n".join([f"import {m}" for m in modules] + [
        "import sys",
        "print(sorted(m for m in sys.modules if m.startswith(('harness', 'train_net')) or m in "
        f"{sorted(NAMES)!r}))",
    ])
    r = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.strip().splitlines()[-1] == "[]"


def _detectron2_trees():
    """The detectron2s a copied package must run on: the installed one (v0.6 with only the
    library-compatibility fixes of ci/detectron2/v0.6-compat.patch), and every source tree
    listed in $DETECTRON2_SOURCES (os.pathsep-separated folders holding a ``detectron2/``
    package, e.g. a checkout of detectron2's main; none is downloaded here)."""
    extra = [p for p in os.environ.get("DETECTRON2_SOURCES", "").split(os.pathsep) if p]
    return [None] + extra


@pytest.fixture(scope="module")
def detectron2_overlays(tmp_path_factory):
    """Each extra source tree's ``detectron2`` package, copied with the ``_C`` stand-in where
    it has no compiled extension (a plain source checkout)."""
    overlays = {}
    for tree in _detectron2_trees()[1:]:
        root = tmp_path_factory.mktemp("detectron2")
        shutil.copytree(os.path.join(tree, "detectron2"), root / "detectron2")
        if not glob.glob(str(root / "detectron2" / "_C*")):
            shutil.copy(os.path.join(REPO, "ci", "detectron2", "_C.py"), root / "detectron2")
        overlays[tree] = str(root)
    return overlays


@pytest.mark.parametrize("tree", _detectron2_trees(), ids=lambda t: t or "installed")
@pytest.mark.parametrize("init", PACKAGES, ids=NAMES)
def test_copied_package_trains_and_infers_alone(tmp_path, init, tree, detectron2_overlays):
    """What a researcher does: copy the package next to their own detectron2 code, build the
    model from the project's Base config, train a step (one image without objects) and infer."""
    name = os.path.basename(os.path.dirname(init))
    project = os.path.dirname(os.path.dirname(init))
    (base,) = glob.glob(os.path.join(project, "configs", "Base-*.yaml"))
    shutil.copytree(os.path.dirname(init), tmp_path / name)
    path = [str(tmp_path)] + ([detectron2_overlays[tree]] if tree else [])
    r = subprocess.run(
        [sys.executable, os.path.join(REPO, "tests", "copied_package_step.py"), name, base],
        cwd=tmp_path, capture_output=True, text=True,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(path)},
    )
    assert r.returncode == 0, r.stderr[-3000:]
    import detectron2

    used = r.stdout.split("detectron2 ")[-1].strip()
    expected = path[-1] if tree else os.path.dirname(os.path.dirname(detectron2.__file__))
    assert used.startswith(expected), f"ran on {used}, not {expected}"
