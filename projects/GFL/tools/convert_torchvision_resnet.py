#!/usr/bin/env python
"""Converts a torchvision ResNet checkpoint (ImageNet weights) to detectron2's ResNet names, for
``configs/gfl_R-101-FPN_2x-ms_coco.yaml``: detectron2 hosts torchvision's ResNet-50 but not its
ResNet-101, which GFL's official R-101 configs start from (``torchvision://resnet101``).

    # on a machine with internet access (any torchvision release has the same weights file):
    wget https://download.pytorch.org/models/resnet101-63fe2227.pth
    python tools/convert_torchvision_resnet.py resnet101-63fe2227.pth pretrained/R-101-torchvision.pkl

The configs that use such a file set what torchvision's weights expect: ``INPUT.FORMAT "RGB"``,
``PIXEL_MEAN [123.675, 116.28, 103.53]``, ``PIXEL_STD [58.395, 57.12, 57.375]`` and
``RESNETS.STRIDE_IN_1X1 False`` (the stride is in the 3x3 conv).
"""

import argparse
import pickle
import re

import torch

# torchvision name -> detectron2 name, applied in this order.
RENAMES = [
    (r"^(conv1|bn1)\.", r"stem.\1."),
    (r"^layer(\d)\.", lambda m: f"res{int(m.group(1)) + 1}."),
    (r"\.bn(\d)\.", r".conv\1.norm."),
    (r"\.downsample\.0\.", ".shortcut."),
    (r"\.downsample\.1\.", ".shortcut.norm."),
]


def convert(state_dict):
    """detectron2's names for every backbone weight of a torchvision ResNet state dict, as
    numpy arrays. The ImageNet classifier (``fc``) and BatchNorm's ``num_batches_tracked`` are
    left out: a detector uses neither."""
    out = {}
    for name, value in state_dict.items():
        if name.startswith("fc.") or name.endswith("num_batches_tracked"):
            continue
        for pattern, replacement in RENAMES:
            name = re.sub(pattern, replacement, name)
        out[name] = value.detach().cpu().numpy()
    return out


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("torchvision_checkpoint", help="e.g. resnet101-63fe2227.pth")
    parser.add_argument("output", help="the .pkl to write (MODEL.WEIGHTS)")
    args = parser.parse_args(argv)
    state = torch.load(args.torchvision_checkpoint, map_location="cpu", weights_only=True)
    model = convert(state)
    with open(args.output, "wb") as f:
        # detectron2 reads a .pkl as {"model": ..., "__author__": ...}; "matching_heuristics"
        # lets its checkpointer align the names with the model's.
        pickle.dump({"model": model, "__author__": "torchvision", "matching_heuristics": True}, f)
    print(f"wrote {len(model)} tensors to {args.output}")


if __name__ == "__main__":
    main()
