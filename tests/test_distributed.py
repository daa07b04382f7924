"""2-process gloo runs: the baselines and every project end with identical weights on both
ranks, and the loss of a batch split over two processes equals the loss of one process on the
whole batch."""

import glob
import os
from datetime import timedelta

import pytest
import torch
from detectron2.structures import Boxes, Instances
from detectron2.utils import comm
from torch.nn.parallel import DistributedDataParallel

from common.engine import Trainer, default_argument_parser, launch, setup
from common.projects import REPO
from harness.testing import assert_split_invariant


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


# Faster R-CNN with every anchor and proposal sampled, so no random subsampling, and with the
# same number of proposals in every image (50 + its 2 GT boxes). GN: BatchNorm statistics depend
# on the split by construction.
FASTER_RCNN_OPTS = [
    "MODEL.ROI_HEADS.NUM_CLASSES", "6", "MODEL.RESNETS.NORM", "GN", "MODEL.FPN.NORM", "GN",
    "MODEL.RPN.BATCH_SIZE_PER_IMAGE", "1000000", "MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE", "1000000",
    "MODEL.RPN.POST_NMS_TOPK_TRAIN", "50",
]


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


@pytest.mark.slow
def test_loss_normalisation_does_not_depend_on_the_split(tmp_path):
    assert_split_invariant(
        "common/configs/faster_rcnn_R-18-FPN_toy.yaml", FASTER_RCNN_OPTS, _batch(), str(tmp_path)
    )


# Every project's toy config, with the norm its README recommends for several GPUs (naiveSyncBN
# here: gloo on CPU; SyncBN needs CUDA).
PROJECT_RUNS = {
    "AP-Loss": ("ap_loss_R-18-FPN_toy.yaml", []),
    "AugFPN": ("augfpn_R-18-FPN_toy.yaml", []),
    "AutoAssign": ("autoassign_R-18-FPN_toy.yaml", []),
    "BorderDet": ("borderdet_R-18-FPN_toy.yaml", []),
    "D2Det": ("d2det_R-18-FPN_toy.yaml", []),
    "DoubleHead": ("double-head-ext_R-18-FPN_toy.yaml", ["MODEL.DOUBLE_HEAD.NORM", "naiveSyncBN"]),
    "DR-Loss": ("dr_loss_R-18-FPN_toy.yaml", []),
    "FPT": ("fpt_R-18_toy.yaml", ["MODEL.FPT.NORM", "naiveSyncBN"]),
    "GFL": ("gfl_R-18-FPN_toy.yaml", []),
    "NoisyAnchor": ("noisy_anchor_R-18-FPN_toy.yaml", []),
    "InterNet": ("internet_R-18-FPN_toy.yaml", ["MODEL.INTERNET.NORM", "naiveSyncBN"]),
    "PSConv": ("psconv-faster_rcnn_R-18-FPN_toy.yaml", []),
    "PBM": ("pbm_R-18-FPN_toy_crowd.yaml", []),
    "SEPC": ("sepc_R-18-FPN_toy.yaml", ["MODEL.SEPC.IBN_NORM", "naiveSyncBN"]),
}


def _train_every_project(out):
    """In each of the 2 processes: every project's toy config for 3 iterations, one after the
    other (one process start for all), each rank's parameters saved."""
    from harness.projects import config_fns, trainer_class

    for project, (name, opts) in PROJECT_RUNS.items():
        config = os.path.join(REPO, "projects", project, "configs", "toy", name)
        run_dir = os.path.join(out, project)
        argv = ["--config-file", config, "SOLVER.MAX_ITER", "3", "SOLVER.IMS_PER_BATCH", "4",
                "DATASETS.TEST", "()", "OUTPUT_DIR", run_dir, *opts]
        cfg = setup(default_argument_parser().parse_args(argv), *config_fns(config))
        trainer = trainer_class(config)(cfg)
        trainer.resume_or_load(resume=False)
        trainer.train()
        model = trainer.model.module if isinstance(trainer.model, DistributedDataParallel) else trainer.model
        torch.save({k: v.detach() for k, v in model.named_parameters()},
                   os.path.join(run_dir, f"rank{comm.get_rank()}.pth"))


@pytest.mark.slow
def test_every_project_trains_on_two_gloo_processes_to_identical_weights(tmp_path):
    projects = {os.path.basename(os.path.dirname(p))
                for p in glob.glob(os.path.join(REPO, "projects", "*", "train_net.py"))}
    assert set(PROJECT_RUNS) == projects, "every project needs its 2-process run here"
    # A collective that one rank issues and the other does not fails after 3 minutes, not 30.
    launch(_train_every_project, 2, dist_url="auto", args=(str(tmp_path),),
           timeout=timedelta(minutes=3))
    for project in PROJECT_RUNS:
        w0 = torch.load(tmp_path / project / "rank0.pth")
        w1 = torch.load(tmp_path / project / "rank1.pth")
        assert w0.keys() == w1.keys()
        different = [k for k in w0 if not torch.equal(w0[k], w1[k])]
        assert not different, f"{project}: ranks differ in {different[:5]}"
        assert all(torch.isfinite(v).all() for v in w0.values()), project
