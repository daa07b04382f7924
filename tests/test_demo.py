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


def _checkpoint(tmp_path, num_classes):
    cfg = load_config(CONFIG, ["MODEL.DEVICE", "cpu", "MODEL.RETINANET.NUM_CLASSES", str(num_classes)])
    torch.manual_seed(0)
    DetectionCheckpointer(build_model(cfg), str(tmp_path)).save(f"k{num_classes}")
    return str(tmp_path / f"k{num_classes}.pth")


def _two_class_dataset(tmp_path):
    """A registered COCO json of the user's own, 2 classes with non-contiguous ids."""
    import json

    (tmp_path / "images").mkdir()
    Image.fromarray(np.zeros((40, 60, 3), np.uint8)).save(tmp_path / "images" / "a.png")
    data = {"images": [{"id": 1, "file_name": "a.png", "height": 40, "width": 60}],
            "annotations": [{"id": 1, "image_id": 1, "category_id": 7, "bbox": [5, 5, 20, 20],
                             "area": 400, "iscrowd": 0}],
            "categories": [{"id": 3, "name": "cat"}, {"id": 7, "name": "dog"}]}
    (tmp_path / "mine.json").write_text(json.dumps(data))
    return ["--register-coco", "mine_val", str(tmp_path / "mine.json"), str(tmp_path / "images")]


def test_demo_takes_the_classes_of_its_registered_dataset(tmp_path):
    register = _two_class_dataset(tmp_path)
    argv = ["--config-file", CONFIG, "--input", str(tmp_path / "images"), "--output", str(tmp_path / "out"),
            *register, "DATASETS.TEST", "('mine_val',)", "OUTPUT_DIR", str(tmp_path / "o")]
    (written,) = run_demo(argv + ["MODEL.WEIGHTS", _checkpoint(tmp_path, 2)])
    assert written[0].endswith("a.png")
    # A checkpoint for the toy data's 6 classes does not fit: one line, not a half-loaded model.
    with pytest.raises(SystemExit, match=r"error: checkpoint .*k6.pth does not fit this model: "
                                         r"head.cls_score.weight is \(54, .*\) there, \(18, .*\) here"):
        run_demo(argv + ["MODEL.WEIGHTS", _checkpoint(tmp_path, 6)])


def test_eval_only_with_a_checkpoint_for_other_classes_is_one_line(tmp_path):
    from harness.testing import run_module

    r = run_module("common.train_net", "--config-file", CONFIG, "--eval-only", *_two_class_dataset(tmp_path),
                   "DATASETS.TEST", "('mine_val',)", "MODEL.WEIGHTS", _checkpoint(tmp_path, 6),
                   "OUTPUT_DIR", str(tmp_path / "o"))
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert "does not fit this model: head.cls_score.weight" in r.stderr.strip().splitlines()[-1]
