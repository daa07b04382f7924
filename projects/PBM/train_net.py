#!/usr/bin/env python
"""Trains and evaluates the Paired-Box Model (PBM) with R2NMS, or its Faster R-CNN baseline.

    python train_net.py --config-file configs/pbm_R-50-FPN_crowdhuman.yaml --num-gpus 8 \
        --register-crowdhuman crowdhuman_train annotation_train.odgt Images \
        --register-crowdhuman crowdhuman_val annotation_val.odgt Images
    python train_net.py --config-file configs/toy/pbm_R-18-FPN_toy_crowd.yaml     # CPU, minutes
    python train_net.py --config-file ... --eval-only MODEL.WEIGHTS output/.../model_final.pth
    python train_net.py --config-file ... --eval-only MODEL.WEIGHTS ... MODEL.PBM.NMS greedy
    python train_net.py --config-file ... --resume
"""

from pbm import CrowdDatasetMapper, PairedDatasetMapper, add_pbm_config

from common.engine import Trainer as BaseTrainer
from common.engine import default_argument_parser, evaluate, launch, setup


class Trainer(BaseTrainer):
    @classmethod
    def build_train_loader(cls, cfg):
        if cfg.MODEL.META_ARCHITECTURE == "PBMRCNN":  # pairs, and the ignore regions
            return super().build_train_loader(cfg, mapper=PairedDatasetMapper(cfg, is_train=True))
        if cfg.MODEL.ROI_HEADS.NAME == "CrowdROIHeads":  # the CrowdHuman baseline: the ignore regions
            return super().build_train_loader(cfg, mapper=CrowdDatasetMapper(cfg, is_train=True))
        return super().build_train_loader(cfg)  # detectron2's Faster R-CNN (the toy baseline)


# This entry, as the repo's tools (harness/: tests, make bench, the demo) find it.
TRAINER = Trainer
CONFIG_FNS = (add_pbm_config,)


def main(args):
    cfg = setup(args, *CONFIG_FNS)
    if args.eval_only:
        return evaluate(TRAINER, cfg, args)
    trainer = TRAINER(cfg)
    trainer.resume_or_load(resume=args.resume)
    return trainer.train()


if __name__ == "__main__":
    args = default_argument_parser().parse_args()
    launch(
        main,
        args.num_gpus,
        num_machines=args.num_machines,
        machine_rank=args.machine_rank,
        dist_url=args.dist_url,
        args=(args,),
    )
