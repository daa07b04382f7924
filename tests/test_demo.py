"""The demo draws detections of a checkpoint on an image folder."""

import numpy as np
import pytest
import torch
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.modeling import build_model
from PIL import Image

from harness.demo import run_demo
from harness.projects import load_config

CONFIG = "common/configs/retinanet_R-18-FPN_toy.yaml"


def test_demo_writes_one_image_per_input(tmp_path):
    cfg = load_config(CONFIG, ["MODEL.DEVICE", "cpu", "MODEL.RETINANET.NUM_CLASSES", "6"])
    torch.manual_seed(0)
    DetectionCheckpointer(build_model(cfg), str(tmp_path)).save("init")
    (tmp_path / "in").mkdir()
    sizes = [(120, 90), (77, 131)]
    for i, (w, h) in enumerate(sizes):
        Image.fromarray(np.random.RandomState(i).randint(0, 255, (h, w, 3), np.uint8)).save(
            tmp_path / "in" / f"im{i}.png")
    (tmp_path / "in" / "notes.txt").write_text("not an image")
    written = run_demo(["--config-file", CONFIG, "--input", str(tmp_path / "in"),
                        "--output", str(tmp_path / "out"), "--confidence", "0.0",
                        "MODEL.WEIGHTS", str(tmp_path / "init.pth"), "OUTPUT_DIR", str(tmp_path / "o"),
                        "MODEL.RETINANET.SCORE_THRESH_TEST", "0.0"])
    assert [p.split("/")[-1] for p, _ in written] == ["im0.png", "im1.png"]
    assert all(n > 0 for _, n in written)  # confidence 0 draws every detection
    for (path, _), (w, h) in zip(written, sizes):
        with Image.open(path) as im:
            assert im.size == (2 * w, 2 * h)  # drawn at scale 2


def test_demo_missing_input_is_one_line_error(tmp_path):
    with pytest.raises(SystemExit, match="error: --input not found"):
        run_demo(["--config-file", CONFIG, "--input", str(tmp_path / "nope"),
                  "--output", str(tmp_path), "MODEL.WEIGHTS", "x.pth", "OUTPUT_DIR", str(tmp_path)])
