#!/usr/bin/env python
"""Trains and evaluates the baseline detectors (detectron2's RetinaNet, FCOS, Faster R-CNN, Mask R-CNN).

    python -m common.train_net --config-file common/configs/retinanet_R-18-FPN_toy.yaml
    python -m common.train_net --config-file ... --eval-only MODEL.WEIGHTS output/.../model_final.pth
    python -m common.train_net --config-file ... --resume
    python -m common.train_net --config-file ... --num-gpus 2      # 2 processes (gloo on CPU)
"""

from common.engine import Trainer, default_argument_parser, evaluate, launch, setup

# This entry, as the repo's tools (harness/: tests, make bench, the demo) find it.
TRAINER = Trainer
CONFIG_FNS = ()


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
