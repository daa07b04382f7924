"""What a researcher does with a project's package, in a process that has only the copied package
and a detectron2 on its path (``common`` cannot be imported): build the model from the
project's Base config, train one SGD step on two small synthetic images (one without objects),
then infer on one image. Run by ``tests/test_projects.py``; prints the detectron2 it used.

    python tests/copied_package_step.py PACKAGE_NAME BASE_CONFIG
"""

import importlib
import math
import sys

sys.modules["common"] = None  # any import of common now fails

import detectron2  # noqa: E402
import torch  # noqa: E402
from detectron2.config import get_cfg  # noqa: E402
from detectron2.modeling import build_model  # noqa: E402
from detectron2.structures import Boxes, Instances  # noqa: E402
from detectron2.utils.events import EventStorage  # noqa: E402


def image(h, w, seed):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (3, h, w), generator=g).float()


def instances(h, w, boxes, classes):
    inst = Instances((h, w))
    inst.gt_boxes = Boxes(torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4))
    inst.gt_classes = torch.tensor(classes, dtype=torch.long)
    # PBM's crowd-detection heads also read the visible part of each box.
    inst.gt_vis_boxes = Boxes(inst.gt_boxes.tensor.clone())
    return inst


def main(name, base):
    package = importlib.import_module(name)
    cfg = get_cfg()
    for fn in dir(package):
        if fn.startswith("add_") and fn.endswith("_config"):
            getattr(package, fn)(cfg)
    cfg.merge_from_file(base)
    cfg.MODEL.DEVICE = "cpu"
    cfg.MODEL.WEIGHTS = ""
    torch.manual_seed(0)
    model = build_model(cfg)

    h, w = 128, 160
    batch = [
        {"image": image(h, w, 0), "height": h, "width": w,
         "instances": instances(h, w, [[10, 12, 70, 90], [60, 30, 150, 120]], [0, 1])},
        {"image": image(h, w, 1), "height": h, "width": w, "instances": instances(h, w, [], [])},
    ]
    model.train()
    with EventStorage(0):
        losses = model(batch)
    assert losses and all(math.isfinite(v.item()) for v in losses.values()), losses
    before = [p.detach().clone() for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    optimizer.zero_grad()
    sum(losses.values()).backward()
    optimizer.step()
    after = [p.detach() for p in model.parameters() if p.requires_grad]
    assert all(torch.isfinite(p).all() for p in after)
    assert any(not torch.equal(a, b) for a, b in zip(after, before)), "the step changed nothing"

    model.eval()
    with torch.no_grad():
        (out,) = model([{"image": image(h, w, 2), "height": h, "width": w}])
    pred = out["instances"]
    assert pred.has("pred_boxes") and pred.has("scores") and pred.has("pred_classes"), pred
    print("losses", {k: round(v.item(), 4) for k, v in losses.items()})
    print("detections", len(pred))
    print("detectron2", detectron2.__file__)


if __name__ == "__main__":
    main(*sys.argv[1:])
