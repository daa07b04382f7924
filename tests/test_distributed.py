"""A 2-process gloo run: both ranks end with identical weights, and the loss of a batch split
over two processes equals the loss of one process on the whole batch."""

import os

import pytest
import torch
import torch.distributed as dist
from detectron2.config import get_cfg
from detectron2.modeling import build_model
from detectron2.structures import Boxes, Instances
from detectron2.utils import comm
from detectron2.utils.events import EventStorage
from torch.nn.parallel import DistributedDataParallel

from common.engine import Trainer, add_common_config, default_argument_parser, launch, setup


def _train_and_dump(argv, out):
    cfg = setup(default_argument_parser().parse_args(argv))
    trainer = Trainer(cfg)
    trainer.resume_or_load(resume=False)
    trainer.train()
    model = trainer.model.module if isinstance(trainer.model, DistributedDataParallel) else trainer.model
    # Parameters only: BatchNorm running statistics are per process (broadcast_buffers=False).
    weights = {k: v.detach() for k, v in model.named_parameters()}
    torch.save(weights, os.path.join(out, f"rank{comm.get_rank()}.pth"))


@pytest.mark.slow
def test_two_gloo_processes_end_with_identical_weights(tmp_path):
    argv = ["--config-file", "common/configs/retinanet_R-18-FPN_toy.yaml",
            "SOLVER.MAX_ITER", "3", "SOLVER.IMS_PER_BATCH", "4", "DATASETS.TEST", "()",
            "OUTPUT_DIR", str(tmp_path)]
    launch(_train_and_dump, 2, dist_url="auto", args=(argv, str(tmp_path)))
    w0 = torch.load(tmp_path / "rank0.pth")
    w1 = torch.load(tmp_path / "rank1.pth")
    assert w0.keys() == w1.keys()
    assert all(torch.equal(w0[k], w1[k]) for k in w0)
    init = torch.load(tmp_path / "model_final.pth", weights_only=False)["model"]
    assert all(torch.equal(init[k], w0[k]) for k in w0)  # rank 0's checkpoint is what it holds


def _deterministic_faster_rcnn_cfg():
    """Faster R-CNN with every anchor and proposal sampled, so no random subsampling, and with
    the same number of proposals in every image (50 + its 2 GT boxes)."""
    cfg = get_cfg()
    add_common_config(cfg)
    cfg.merge_from_file("common/configs/faster_rcnn_R-18-FPN_toy.yaml")
    cfg.MODEL.DEVICE = "cpu"
    cfg.MODEL.ROI_HEADS.NUM_CLASSES = 6
    # Per-sample normalisation: BatchNorm statistics depend on the split by construction.
    cfg.MODEL.RESNETS.NORM = cfg.MODEL.FPN.NORM = "GN"
    cfg.MODEL.RPN.BATCH_SIZE_PER_IMAGE = 10**6
    cfg.MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE = 10**6
    cfg.MODEL.RPN.POST_NMS_TOPK_TRAIN = 50
    return cfg


def _batch():
    g = torch.Generator().manual_seed(0)
    out = []
    for boxes, classes in [([[8, 8, 40, 50], [60, 20, 110, 70]], [1, 4]),
                           ([[30, 5, 60, 30], [5, 40, 90, 90]], [0, 5])]:
        inst = Instances((96, 128))
        inst.gt_boxes = Boxes(torch.tensor(boxes, dtype=torch.float32))
        inst.gt_classes = torch.tensor(classes)
        out.append({"image": torch.rand(3, 96, 128, generator=g) * 255, "instances": inst})
    return out


def _loss_and_grads(state, out):
    """Loss and gradient of this process's share of the batch, as training computes them."""
    cfg = _deterministic_faster_rcnn_cfg()
    model = build_model(cfg)
    model.load_state_dict(state)
    world, rank = comm.get_world_size(), comm.get_rank()
    if world > 1:
        model = DistributedDataParallel(model, broadcast_buffers=False)
    with EventStorage():
        losses = model(_batch()[rank::world])
    sum(losses.values()).backward()  # DDP averages the gradients over processes
    values = torch.stack([losses[k].detach() for k in sorted(losses)])
    if world > 1:
        dist.all_reduce(values)
        values /= world
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    if rank == 0:
        torch.save({"losses": dict(zip(sorted(losses), values)), "grads": grads}, out)


@pytest.mark.slow
def test_loss_normalisation_does_not_depend_on_the_split(tmp_path):
    torch.manual_seed(0)
    state = build_model(_deterministic_faster_rcnn_cfg()).state_dict()
    _loss_and_grads(state, tmp_path / "one.pth")
    launch(_loss_and_grads, 2, dist_url="auto", args=(state, tmp_path / "two.pth"))
    one, two = torch.load(tmp_path / "one.pth"), torch.load(tmp_path / "two.pth")
    assert one["losses"].keys() == two["losses"].keys()
    for k in one["losses"]:
        assert one["losses"][k] > 0
        torch.testing.assert_close(two["losses"][k], one["losses"][k], rtol=1e-5, atol=1e-7)
    assert one["grads"].keys() == {k.removeprefix("module.") for k in two["grads"]}
    for k, g in two["grads"].items():
        torch.testing.assert_close(g, one["grads"][k.removeprefix("module.")], rtol=1e-4, atol=1e-6)
