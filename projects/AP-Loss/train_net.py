#!/usr/bin/env python
"""Trains and evaluates RetinaNet with the AP-loss.

    python train_net.py --config-file configs/ap_loss_R-50-FPN_512_100e_coco.yaml --num-gpus 2
    python train_net.py --config-file configs/toy/ap_loss_R-18-FPN_toy.yaml    # CPU, minutes
    python train_net.py --config-file ... --eval-only MODEL.WEIGHTS output/.../model_final.pth
    python train_net.py --config-file ... --resume
"""

from ap_loss import BoxAwareDatasetMapper, add_ap_loss_config, build_ssd_augmentation

from common.engine import Trainer, default_argument_parser, evaluate, launch, setup


class APLossTrainer(Trainer):
    """The shared Trainer with the official SSD-style training augmentation where
    MODEL.AP_LOSS.SSD_AUGMENTATION is on (the COCO configs; the toy config keeps the shared
    toy recipe)."""

    @classmethod
    def build_train_loader(cls, cfg):
        if not cfg.MODEL.AP_LOSS.SSD_AUGMENTATION:
            return super().build_train_loader(cfg)
        mapper = BoxAwareDatasetMapper(cfg, is_train=True, augmentations=build_ssd_augmentation(cfg))
        return super().build_train_loader(cfg, mapper=mapper)


# This entry, as the repo's tools (harness/: tests, make bench, the demo) find it.
TRAINER = APLossTrainer
CONFIG_FNS = (add_ap_loss_config,)


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
