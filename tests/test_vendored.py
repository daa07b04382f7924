"""The mechanisms several packages share are copied into each package's ``vendored.py`` (a
package stands alone): every copy is identical and nothing else in the repo redefines them, so
a fix to one cannot silently skip the others. Each mechanism is checked once here (the copies
are the same code): the GroupNorm head equals detectron2's, the FCOS labelling handles images
without objects, the loss normaliser does not depend on how a batch is split over processes."""

import ast
import glob
import importlib.util
import os

import pytest
import torch
from detectron2.layers import ShapeSpec
from detectron2.modeling.meta_arch.fcos import FCOS, FCOSHead
from detectron2.modeling.meta_arch.retinanet import RetinaNetHead
from detectron2.structures import Boxes, Instances
from torch import nn

from common.engine import launch
from common.modeling import vendored
from common.projects import REPO

VENDORED = sorted(glob.glob(os.path.join(REPO, "projects", "*", "*", "vendored.py"))
                  + [os.path.join(REPO, "common", "modeling", "vendored.py")])


def _top_level(path):
    """name -> ast dump of each top-level function, class and assignment of ``path``."""
    out = {}
    for node in ast.parse(open(path).read(), path).body:
        if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            out[node.name] = ast.dump(node)
        elif isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Name):
            out[node.targets[0].id] = ast.dump(node)
    out.pop("__all__", None)
    return out


def test_every_vendored_mechanism_has_one_definition_everywhere():
    assert len(VENDORED) >= 6
    seen = {}
    for path in VENDORED:
        for name, dump in _top_level(path).items():
            seen.setdefault(name, {}).setdefault(dump, []).append(os.path.relpath(path, REPO))
    differing = {name: list(v.values()) for name, v in seen.items() if len(v) > 1}
    assert not differing, f"vendored copies differ: {differing}"
    shared = [name for name, v in seen.items() if len(next(iter(v.values()))) > 1]
    assert {"Scale", "normalizer_over_processes", "add_group_norm", "fcos_label_anchors",
            "resnet_fpn_p6p7"} <= set(shared)


def test_no_other_file_redefines_a_vendored_mechanism():
    names = {n for path in VENDORED for n in _top_level(path)}
    sources = glob.glob(os.path.join(REPO, "projects", "*", "*", "**", "*.py"), recursive=True)
    sources += glob.glob(os.path.join(REPO, "common", "**", "*.py"), recursive=True)
    clashes = [
        (os.path.relpath(p, REPO), n) for p in sources
        if os.path.basename(p) != "vendored.py" and f"{os.sep}tests{os.sep}" not in p
        for n in _top_level(p) if n in names
    ]
    assert not clashes, f"redefined outside vendored.py: {clashes}"


def _probe_safe_group_norm(channels):
    # What v0.6's 1-channel type probe can build; every real layer gets GroupNorm(32, C).
    return nn.GroupNorm(32 if channels > 1 else 1, channels)


@pytest.mark.parametrize("head_cls", [RetinaNetHead, FCOSHead])
def test_add_group_norm_gives_the_head_detectron2_builds_with_gn(head_cls):
    kwargs = dict(input_shape=[ShapeSpec(channels=64)] * 2, num_classes=3, conv_dims=[64, 64])
    if head_cls is RetinaNetHead:
        kwargs["num_anchors"] = 9
    torch.manual_seed(0)
    expected = head_cls(norm=_probe_safe_group_norm, **kwargs)
    torch.manual_seed(0)
    ours = vendored.add_group_norm(head_cls(norm="", **kwargs))
    assert [type(m) for m in ours.modules()] == [type(m) for m in expected.modules()]
    assert all(m.num_groups == 32 for m in ours.modules() if isinstance(m, nn.GroupNorm))
    a, b = ours.state_dict(), expected.state_dict()
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    x = [torch.randn(2, 64, 8, 8), torch.randn(2, 64, 4, 4)]
    for u, v in zip(ours(x), expected(x)):
        assert all(torch.equal(p, q) for p, q in zip(u, v))


def test_fcos_label_anchors_labels_an_image_without_objects_as_background():
    class Model(FCOS):  # only what the labelling reads
        def __init__(self):
            nn.Module.__init__(self)
            self.num_classes, self.center_sampling_radius = 3, 1.5

    anchors = [Boxes(torch.tensor([[0.0, 0, 8, 8], [8, 0, 16, 8], [0, 8, 8, 16], [8, 8, 16, 16]])),
               Boxes(torch.tensor([[0.0, 0, 16, 16]]))]
    model = Model()
    gt = Instances((16, 16), gt_boxes=Boxes(torch.tensor([[1.0, 1, 15, 15]])),
                   gt_classes=torch.tensor([2]))
    empty = Instances((16, 16), gt_boxes=Boxes(torch.zeros(0, 4)),
                      gt_classes=torch.zeros(0, dtype=torch.long))
    labels, boxes = vendored.fcos_label_anchors(model, anchors, [gt, empty])
    assert labels[1].tolist() == [3] * 5
    as_tensor = [b.tensor if isinstance(b, Boxes) else b for b in boxes]
    assert torch.equal(as_tensor[1], torch.zeros(5, 4))
    (label,), (box,) = FCOS.label_anchors(model, anchors, [gt])
    assert torch.equal(labels[0], label)
    assert 2 in labels[0].tolist()


def _normalizer_module():
    spec = importlib.util.spec_from_file_location(
        "gfl_vendored", os.path.join(REPO, "projects", "GFL", "gfl", "vendored.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_normalizer_on_one_process_is_the_clamped_total():
    norm = _normalizer_module().normalizer_over_processes
    assert norm(torch.tensor(0.0), 1.0).item() == 1.0
    assert norm(torch.tensor(7.0), 1.0).item() == 7.0
    assert norm(torch.tensor(1e-9), 1e-6).item() == pytest.approx(1e-6)


def _normalize_on_rank(counts, out):
    from detectron2.utils import comm

    norm = _normalizer_module().normalizer_over_processes
    rank = comm.get_rank()
    x = torch.tensor(float(counts[rank]), requires_grad=True)
    value = norm(x, 1.0)
    torch.save({"value": value.item(), "needs_grad": value.requires_grad},
               os.path.join(out, f"rank{rank}.pt"))


@pytest.mark.parametrize("counts, expected", [((3, 5), 4.0), ((0, 1), 0.5), ((0, 0), 0.5)])
def test_normalizer_over_two_processes_is_the_batch_total_per_process(tmp_path, counts, expected):
    """A loss sum_p / normalizer, averaged over the processes (DDP), equals one process's
    sum / max(total, 1): with (0, 1) positives, 0.5 on each rank (the official codes' mean
    then clamp gives 1 and halves the loss)."""
    launch(_normalize_on_rank, 2, dist_url="auto", args=(counts, str(tmp_path)))
    for rank in (0, 1):
        got = torch.load(tmp_path / f"rank{rank}.pt")
        assert got["value"] == pytest.approx(expected)
        assert not got["needs_grad"]  # a constant, as the official .item() normalisers
