#!/usr/bin/env python
"""Trains and evaluates D2Det (Faster R-CNN FPN with dense local regression and discriminative RoI pooling;
with MODEL.MASK_ON, its instance segmentation).

    python train_net.py --config-file configs/d2det_R-50-FPN_2x_coco.yaml --num-gpus 8
    python train_net.py --config-file configs/d2det-mask_R-101-FPN_2x_coco.yaml --num-gpus 8
    python train_net.py --config-file configs/toy/d2det_R-18-FPN_toy.yaml       # CPU, minutes
    python train_net.py --config-file ... --eval-only MODEL.WEIGHTS output/.../model_final.pth
    python train_net.py --config-file ... --resume
"""

import os

from d2det import MaskScoreCOCOEvaluator, add_d2det_config
from detectron2.evaluation import COCOEvaluator, DatasetEvaluators

from common.engine import Trainer, default_argument_parser, evaluate, launch, setup


class D2DetTrainer(Trainer):
    """With masks on, box AP is ranked by the box scores and mask AP by D2Det's mask scores
    (box score + 0.3 x predicted mask IoU), as the official ``simple_test`` returns them."""

    @classmethod
    def build_evaluator(cls, cfg, dataset_name, output_folder=None):
        evaluator = super().build_evaluator(cfg, dataset_name, output_folder)
        if not (cfg.MODEL.MASK_ON and isinstance(evaluator, COCOEvaluator)):
            return evaluator
        out = output_folder or os.path.join(cfg.OUTPUT_DIR, "inference")
        return DatasetEvaluators([
            MaskScoreCOCOEvaluator(dataset_name, "bbox", output_dir=out, use_fast_impl=False),
            MaskScoreCOCOEvaluator(dataset_name, "segm", output_dir=os.path.join(out, "segm"),
                                   use_fast_impl=False),
        ])


# This entry, as the repo's tools (harness/: tests, make bench, the demo) find it.
TRAINER = D2DetTrainer
CONFIG_FNS = (add_d2det_config,)


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
