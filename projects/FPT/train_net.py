#!/usr/bin/env python
"""Trains and evaluates Faster / Mask R-CNN whose feature pyramid is the Feature Pyramid
Transformer (Self-, Grounding and Rendering Transformers).

    python train_net.py --config-file configs/fpt_R-50_120k_coco.yaml --num-gpus 8
    python train_net.py --config-file configs/toy/fpt_R-18_toy.yaml      # CPU, minutes
    python train_net.py --config-file ... --eval-only MODEL.WEIGHTS output/.../model_final.pth
    python train_net.py --config-file ... --resume
"""

from fpt import add_fpt_config

from common.engine import Trainer, default_argument_parser, evaluate, launch, setup

# This entry, as the repo's tools (harness/: tests, make bench, the demo) find it.
TRAINER = Trainer
CONFIG_FNS = (add_fpt_config,)


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
