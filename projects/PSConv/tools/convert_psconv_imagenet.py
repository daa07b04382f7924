#!/usr/bin/env python
"""Converts an official ImageNet PS-ResNet / PS-ResNeXt checkpoint (d-li14/PSConv's Google
Drive files: torchvision-style names, ``conv2.gwconv`` / ``conv2.gwconv_shift`` / ``conv2.conv``
in every bottleneck) to the names of this project's FPN backbones, for ``MODEL.WEIGHTS``.

    python tools/convert_psconv_imagenet.py ps-resnet50.pth PSConv-ImageNet/PS-R-50.pkl

Key mapping (``L`` the torchvision layer 1-4, detectron2 stage ``L + 1``; every key gets the
prefix ``backbone.bottom_up.``):

    conv1.weight                   -> stem.conv1.weight
    bn1.*                          -> stem.conv1.norm.*
    layerL.B.convK.weight          -> res{L+1}.B.convK.weight      (K = 1, 3)
    layerL.B.conv2.<part>.weight   -> res{L+1}.B.conv2.<part>.weight  (gwconv, gwconv_shift, conv)
    layerL.B.bnK.*                 -> res{L+1}.B.convK.norm.*
    layerL.B.downsample.0.weight   -> res{L+1}.B.shortcut.weight
    layerL.B.downsample.1.*        -> res{L+1}.B.shortcut.norm.*
    fc.*, *.num_batches_tracked    -> dropped

The masked entries of ``conv2.conv`` are copied as they are; the model zeroes them when it
loads the file unless ``MODEL.PSCONV.ZERO_MASKED_ON_LOAD False``.
"""

import argparse
import os
import pickle
import re

import torch

PREFIX = "backbone.bottom_up."


def convert_key(key):
    """The detectron2 name of an official key, or None for keys that are dropped."""
    if key.startswith("fc.") or key.endswith("num_batches_tracked"):
        return None
    if key == "conv1.weight":
        return PREFIX + "stem.conv1.weight"
    if key.startswith("bn1."):
        return PREFIX + "stem.conv1.norm." + key[len("bn1."):]
    m = re.fullmatch(r"layer(\d)\.(\d+)\.(.+)", key)
    if not m:
        raise KeyError(f"unexpected key {key!r} in a PS-ResNet checkpoint")
    stage, block, rest = int(m.group(1)) + 1, m.group(2), m.group(3)
    rest = re.sub(r"^bn(\d)\.", r"conv\1.norm.", rest)
    rest = re.sub(r"^downsample\.0\.", "shortcut.", rest)
    rest = re.sub(r"^downsample\.1\.", "shortcut.norm.", rest)
    return f"{PREFIX}res{stage}.{block}.{rest}"


def convert(state):
    """{official key: tensor} -> {detectron2 key: numpy array} (``module.`` prefixes removed)."""
    out = {}
    for k, v in state.items():
        new = convert_key(k[len("module."):] if k.startswith("module.") else k)
        if new is not None:
            out[new] = v.detach().cpu().numpy()
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source", help="the official .pth")
    parser.add_argument("output", help="the .pkl to write")
    args = parser.parse_args()
    state = torch.load(args.source, map_location="cpu")
    state = state.get("state_dict", state)
    model = convert(state)
    os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
    with open(args.output, "wb") as f:
        pickle.dump({"model": model, "__author__": "PSConv (d-li14), converted",
                     "matching_heuristics": False}, f)
    print(f"wrote {len(model)} tensors to {args.output}")


if __name__ == "__main__":
    main()
