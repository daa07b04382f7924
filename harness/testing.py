"""Helpers for the repo's and the projects' tests."""

import os
import subprocess
import sys

import torch

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_module(module, *args, cwd=REPO, timeout=600, env=None):
    """Runs ``python -m module args`` as a user would; returns the CompletedProcess."""
    return subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=cwd, capture_output=True, text=True, timeout=timeout,
        env={**os.environ, **(env or {})},
    )


def run_script(path, *args, cwd=None, timeout=600):
    """Runs ``python path args`` (e.g. a project's train_net.py) from ``cwd``."""
    return subprocess.run(
        [sys.executable, path, *args],
        cwd=cwd or os.path.dirname(os.path.abspath(path)), capture_output=True, text=True,
        timeout=timeout,
    )


def _build(config_file, opts):
    from detectron2.modeling import build_model

    from harness.projects import load_config

    return build_model(load_config(config_file, ["MODEL.DEVICE", "cpu", *opts]))


def _loss_and_grads(config_file, opts, state, batch, out, keys=None):
    """Loss and gradients of this process's share of ``batch``, as training computes them
    (only the losses named in ``keys``, if given)."""
    import torch.distributed as dist
    from detectron2.utils import comm
    from detectron2.utils.events import EventStorage
    from torch.nn.parallel import DistributedDataParallel

    model = _build(config_file, opts)
    model.load_state_dict(state)
    world, rank = comm.get_world_size(), comm.get_rank()
    if world > 1:
        # With ``keys``, parameters that only other losses reach get no gradient.
        model = DistributedDataParallel(model, broadcast_buffers=False,
                                        find_unused_parameters=keys is not None)
    with EventStorage():
        losses = model(batch[rank::world])
    if keys is not None:
        losses = {k: losses[k] for k in keys}
    sum(losses.values()).backward()  # DDP averages the gradients over processes
    values = torch.stack([losses[k].detach() for k in sorted(losses)])
    if world > 1:
        dist.all_reduce(values)
        values /= world
    grads = {n.removeprefix("module."): p.grad.clone()
             for n, p in model.named_parameters() if p.grad is not None}
    if rank == 0:
        torch.save({"losses": dict(zip(sorted(losses), values)), "grads": grads}, out)


def split_losses_and_grads(config_file, opts, batch, tmp_dir, processes, keys=None, state=None):
    """Losses and gradients of ``batch`` (a list of model inputs) as ``processes`` gloo
    processes with DDP compute them, each taking ``batch[rank::processes]``: the losses
    averaged over processes, the gradients as DDP leaves them. ``keys`` restricts the result
    to those losses (and the gradients of their sum); ``state`` is the model's state_dict
    (default: the seeded initialisation). Returns ``{"losses": {...}, "grads": {...}}``."""
    from common.engine import launch

    if state is None:
        torch.manual_seed(0)
        state = _build(config_file, opts).state_dict()
    out = os.path.join(tmp_dir, f"split{processes}.pth")
    if processes == 1:
        _loss_and_grads(config_file, opts, state, batch, out, keys)
    else:
        launch(_loss_and_grads, processes, dist_url="auto", args=(config_file, opts, state, batch, out, keys))
    return torch.load(out)


def assert_split_invariant(config_file, opts, batch, tmp_dir, keys=None, state=None):
    """The losses and gradients of ``batch`` (a list of model inputs, even length) are the same
    in one process and split over two gloo processes with DDP. Use per-sample normalisation
    (GN) in ``opts``: BatchNorm statistics depend on the split by construction. ``keys``
    restricts the check to those losses (and the gradients of their sum); ``state`` is the
    model's state_dict (default: the seeded initialisation)."""
    if state is None:
        torch.manual_seed(0)
        state = _build(config_file, opts).state_dict()
    one = split_losses_and_grads(config_file, opts, batch, tmp_dir, 1, keys, state)
    two = split_losses_and_grads(config_file, opts, batch, tmp_dir, 2, keys, state)
    assert one["losses"].keys() == two["losses"].keys()
    for k in one["losses"]:
        assert one["losses"][k] > 0, k
        torch.testing.assert_close(two["losses"][k], one["losses"][k], rtol=1e-5, atol=1e-7)
    assert one["grads"].keys() == two["grads"].keys()
    for k, g in two["grads"].items():
        torch.testing.assert_close(g, one["grads"][k], rtol=1e-4, atol=1e-6)
    return one["losses"]


def make_instances(h, w, boxes, classes):
    """Ground truth of one ``h x w`` image: XYXY ``boxes`` and their ``classes``."""
    from detectron2.structures import Boxes, Instances

    inst = Instances((h, w))
    inst.gt_boxes = Boxes(torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4))
    inst.gt_classes = torch.tensor(classes, dtype=torch.long)
    return inst


def check_eval_output(model, num_classes):
    """An eval-mode model returns, for a 97x131 input meant as 194x262, Instances at 194x262
    with boxes inside the image, scores in [0, 1] and classes in range."""
    model.eval()
    with torch.no_grad():
        (out,) = model([{"image": torch.rand(3, 97, 131) * 255, "height": 194, "width": 262}])
    inst = out["instances"]
    assert inst.image_size == (194, 262) and 0 < len(inst) <= 100
    b = inst.pred_boxes.tensor
    assert (b[:, 0] >= 0).all() and (b[:, 1] >= 0).all()
    assert (b[:, 2] <= 262).all() and (b[:, 3] <= 194).all()
    assert ((inst.scores >= 0) & (inst.scores <= 1)).all()
    assert ((inst.pred_classes >= 0) & (inst.pred_classes < num_classes)).all()


def smoke_train_and_eval(train_net, config, out_dir, *opts, task="bbox"):
    """A few iterations of ``train_net.py --config-file config`` (relative to its folder), then
    its evaluation: exit 0, an evaluation table, a final checkpoint, finite losses and the
    ``task``'s AP in metrics.json ("bbox": COCO box AP; "crowd": the crowd metrics)."""
    import json
    import math

    r = run_script(train_net, "--config-file", config, "SOLVER.MAX_ITER", "3",
                   "SOLVER.IMS_PER_BATCH", "4", "OUTPUT_DIR", str(out_dir), *opts)
    assert r.returncode == 0, r.stderr[-3000:]
    assert f"Evaluation results for {task}" in r.stdout + r.stderr
    assert os.path.isfile(os.path.join(out_dir, "model_final.pth"))
    metrics = [json.loads(line) for line in open(os.path.join(out_dir, "metrics.json"))]
    losses = [m["total_loss"] for m in metrics if "total_loss" in m]
    assert losses and all(math.isfinite(v) for v in losses)
    assert any(f"{task}/AP" in m for m in metrics)
    return metrics
