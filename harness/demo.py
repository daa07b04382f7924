#!/usr/bin/env python
"""Runs a trained detector on an image or a folder and writes the images with their boxes.

    python -m harness.demo --config-file common/configs/retinanet_R-18-FPN_toy.yaml \
        --input path/to/img_or_folder --output output/demo MODEL.WEIGHTS model_final.pth

A project's config (``projects/<P>/configs/...``) brings its package's ``add_<x>_config``.
"""

import argparse
import glob
import os

from detectron2.data import MetadataCatalog
from detectron2.data.detection_utils import read_image
from detectron2.engine import DefaultPredictor
from detectron2.utils.visualizer import Visualizer

IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".bmp")


def list_images(path):
    if os.path.isdir(path):
        files = sorted(f for f in glob.glob(os.path.join(path, "*")) if f.lower().endswith(IMAGE_EXTS))
    elif os.path.isfile(path):
        files = [path]
    else:
        raise SystemExit(f"error: --input not found: {path}")
    if not files:
        raise SystemExit(f"error: no images ({', '.join(IMAGE_EXTS)}) in {path}")
    return files


def draw_detections(predictor, cfg, files, output_dir, confidence=0.5):
    """Writes ``<output_dir>/<name>`` for each input; returns [(path, num_boxes_drawn)]."""
    os.makedirs(output_dir, exist_ok=True)
    meta = MetadataCatalog.get(cfg.DATASETS.TEST[0] if cfg.DATASETS.TEST else "__unused")
    written = []
    for f in files:
        image = read_image(f, format="BGR")
        instances = predictor(image)["instances"].to("cpu")
        instances = instances[instances.scores >= confidence]
        vis = Visualizer(image[:, :, ::-1], meta, scale=2.0)
        out = vis.draw_instance_predictions(instances)
        path = os.path.join(output_dir, os.path.splitext(os.path.basename(f))[0] + ".png")
        out.save(path)
        written.append((path, len(instances)))
    return written


def run_demo(argv=None):
    from common.engine import add_dataset_arguments, load_fitting_checkpoint, setup
    from harness.projects import config_fns

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config-file", required=True, metavar="FILE")
    parser.add_argument("--input", required=True, help="an image or a folder of images")
    parser.add_argument("--output", required=True, help="folder for the drawn images")
    parser.add_argument("--confidence", type=float, default=0.5, help="min score drawn")
    # Your own dataset: with DATASETS.TEST "('NAME',)" its classes and their names are used.
    add_dataset_arguments(parser)
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides KEY VALUE")
    args = parser.parse_args(argv)
    args.resume, args.eval_only, args.output_subdir = False, True, "demo"  # setup() as for --eval-only
    files = list_images(args.input)
    # As --eval-only: MODEL.WEIGHTS is required, the first test set gives the classes.
    cfg = setup(args, *config_fns(args.config_file))
    predictor = DefaultPredictor(cfg)
    load_fitting_checkpoint(predictor.model, cfg.MODEL.WEIGHTS)
    written = draw_detections(predictor, cfg, files, args.output, args.confidence)
    for path, n in written:
        print(f"{path}: {n} detections >= {args.confidence}")
    return written


if __name__ == "__main__":
    run_demo()
