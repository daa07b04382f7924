"""Time of ``--register-coco``'s json check (``checked_coco_json``) on a COCO-size dataset.

    python -m common.benchmark.coco_check        # also the last step of make bench

Writes, in a temporary folder, a json with COCO 2017 train's counts (118,287 images, 860,001
boxes with a polygon each, 80 categories) and an empty file per image (the check tests that
each exists), then times the check in this process.
"""

import argparse
import json
import os
import random
import tempfile
import time

from common.data.datasets import checked_coco_json


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=118287)
    parser.add_argument("--boxes", type=int, default=860001)
    args = parser.parse_args(argv)
    rng = random.Random(0)
    with tempfile.TemporaryDirectory() as root:
        image_root = os.path.join(root, "images")
        os.makedirs(image_root)
        images = [{"id": i, "file_name": f"{i:012d}.jpg", "height": 480, "width": 640}
                  for i in range(args.images)]
        for im in images:
            open(os.path.join(image_root, im["file_name"]), "w").close()
        boxes = [{"id": j, "image_id": rng.randrange(args.images), "category_id": rng.randint(1, 80),
                  "bbox": [10.0, 20.0, 30.5, 40.5], "area": 1235.25, "iscrowd": 0,
                  "segmentation": [[10, 20, 40.5, 20, 40.5, 60.5]]} for j in range(args.boxes)]
        categories = [{"id": i, "name": f"class{i}", "supercategory": "thing"} for i in range(1, 81)]
        json_file = os.path.join(root, "instances.json")
        with open(json_file, "w") as f:
            json.dump({"info": {}, "images": images, "annotations": boxes, "categories": categories}, f)
        size = os.path.getsize(json_file) / 1e6
        start = time.perf_counter()
        checked_coco_json("coco_size", json_file, image_root)
        seconds = time.perf_counter() - start
    print(f"checked_coco_json: {seconds:.1f} s for {args.images} images, {args.boxes} boxes, "
          f"{size:.0f} MB json")


if __name__ == "__main__":
    main()
