"""``make demo``: trains a detector on toy_shapes on the CPU (a few minutes), evaluates it on
toy_shapes_val, and draws its detections on a few validation images.

Writes ``output/demo/train/`` (log, metrics, TensorBoard events, checkpoints) and
``output/demo/detections/*.png``. Running it again resumes from the last checkpoint.
"""

import json
import os
import shutil
import subprocess

from detectron2.data import MetadataCatalog

from common.data import prepare
from common.projects import REPO, train_command
from harness.demo import run_demo

# Generalized Focal Loss (projects/GFL), the template project.
CONFIG = "projects/GFL/configs/toy/gfl_R-18-FPN_toy.yaml"
# A shorter schedule than the toy benchmark's, so the demo takes minutes, not a quarter hour.
SCHEDULE = ["SOLVER.MAX_ITER", "400", "SOLVER.STEPS", "(300, 370)"]
NUM_IMAGES = 8


def main(out="output/demo"):
    out = os.path.join(REPO, out)
    train_dir = os.path.join(out, "train")
    resume = ["--resume"] if os.path.exists(os.path.join(train_dir, "last_checkpoint")) else []
    cmd = train_command(CONFIG, *resume, "OUTPUT_DIR", train_dir, *SCHEDULE)
    print("$", " ".join(["python"] + cmd[1:]), flush=True)
    subprocess.run(cmd, cwd=REPO, check=True)

    prepare("toy_shapes_val")
    inputs = os.path.join(out, "inputs")
    os.makedirs(inputs, exist_ok=True)
    val_images = MetadataCatalog.get("toy_shapes_val").image_root
    for name in sorted(os.listdir(val_images))[:NUM_IMAGES]:
        shutil.copy(os.path.join(val_images, name), inputs)
    detections = os.path.join(out, "detections")
    run_demo(["--config-file", CONFIG, "--input", inputs, "--output", detections,
              "MODEL.WEIGHTS", os.path.join(train_dir, "model_final.pth"),
              "OUTPUT_DIR", os.path.join(out, "predict")])

    metrics = [json.loads(line) for line in open(os.path.join(train_dir, "metrics.json"))]
    final = [m for m in metrics if "bbox/AP" in m][-1]
    iters = max(m["iteration"] for m in metrics if "total_loss" in m) + 1
    print(f"\ntoy_shapes_val box AP {final['bbox/AP']:.1f}, AP50 {final['bbox/AP50']:.1f} "
          f"({CONFIG}, {iters} iterations)")
    print(f"training run: {train_dir}\ndetections drawn: {detections}/*.png")


if __name__ == "__main__":
    os.chdir(REPO)
    main()
