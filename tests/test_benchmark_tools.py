"""The toy benchmark's seed statistics and run reuse, and the label-assignment counter, against
values worked out by hand."""

import json
import math
import os

import pytest
import torch
from detectron2.config import get_cfg
from detectron2.modeling import build_model

from common.benchmark import toy
from common.engine import add_common_config
from harness import assignment


def test_mean_std_is_the_sample_standard_deviation():
    mean, std, n = toy.mean_std([70.0, 72.0, 77.0])
    assert (mean, n) == (73.0, 3)
    assert std == pytest.approx(math.sqrt((9 + 1 + 16) / 2))
    assert toy.fmt([70.0, 72.0, 77.0]) == "73.0 ± 3.6 (3)"
    assert toy.fmt([45.4]) == "45.4"  # one seed: no spread to show
    assert toy.fmt([math.nan, math.nan]) == "n/a"  # no object of that size in the test set


def _run(config, seed, ap, segm=None):
    return {"config": config, "seed": seed, "task": "bbox", "AP": ap, "AP50": ap + 20,
            "AP75": ap, "APs": ap, "APm": ap, "APl": math.nan, "segm": segm, "minutes": 10.0 + seed,
            "s_per_iter": 0.7, "iters": 900, "command": f"python train {config}"}


def test_summarise_groups_seeds_per_config_and_table_shows_mean_std_n():
    runs = [_run("a.yaml", 0, 40.0), _run("a.yaml", 1, 44.0), _run("b.yaml", 0, 50.0)]
    rows = toy.summarise(runs)
    assert [r["config"] for r in rows] == ["a.yaml", "b.yaml"]
    assert rows[0]["AP"] == [40.0, 44.0] and rows[0]["seeds"] == [0, 1]
    text = toy.table(rows, "test machine")
    assert "| a.yaml | 42.0 ± 2.8 (2) | 62.0 ± 2.8 (2) |" in text
    assert "| b.yaml | 50.0 | 70.0 |" in text
    assert "| n/a | 900 | 10.5 | 0.70 |" in text  # APl; minutes per run averaged over seeds


def test_finished_run_is_read_not_trained_again(tmp_path, monkeypatch):
    config = os.path.join(toy.REPO, "common", "configs", "fcos_R-18-FPN_toy.yaml")
    out_dir = tmp_path / "fcos_R-18-FPN_toy_seed3"
    out_dir.mkdir()
    cmd = toy.train_command(config, "OUTPUT_DIR", str(out_dir), "SEED", "3")
    command = " ".join(["python"] + cmd[1:]).replace(toy.REPO + os.sep, "")
    done = {**_run("common/configs/fcos_R-18-FPN_toy.yaml", 3, 75.0), "command": command,
            "config_digest": toy.config_digest(config)}
    (out_dir / "result.json").write_text(json.dumps(done))

    def no_training(*args, **kwargs):
        raise AssertionError("trained again")

    monkeypatch.setattr(toy.subprocess, "run", no_training)
    assert json.dumps(toy.run_one(config, str(tmp_path), seed=3)) == json.dumps(done)
    # Another command (an override) is another experiment: it trains (here: would train).
    with pytest.raises(AssertionError, match="trained again"):
        toy.run_one(config, str(tmp_path), ("SOLVER.MAX_ITER", "10"), seed=3)
    # So is the same command after the config file's settings changed. (The stale run was
    # removed before the attempt above.)
    assert not (out_dir / "result.json").exists()
    (out_dir / "result.json").write_text(json.dumps({**done, "config_digest": "0" * 16}))
    with pytest.raises(AssertionError, match="trained again"):
        toy.run_one(config, str(tmp_path), seed=3)


def _fake_training(calls, ap=70.0):
    """Stands in for a training subprocess: records its command, writes metrics.json."""
    def run(cmd, **kwargs):
        calls.append(cmd)
        out_dir = cmd[cmd.index("OUTPUT_DIR") + 1]
        with open(os.path.join(out_dir, "metrics.json"), "a") as f:
            f.write(json.dumps({"iteration": 899, "total_loss": 0.3, "time": 0.5}) + "\n")
            ap_row = {f"bbox/{k}": ap for k in toy.TABLE_COLUMNS["bbox"]}
            f.write(json.dumps({"iteration": 899, **ap_row}) + "\n")
    return run


def test_interrupted_run_resumes_from_its_checkpoint(tmp_path, monkeypatch):
    config = os.path.join(toy.REPO, "common", "configs", "fcos_R-18-FPN_toy.yaml")
    out_dir = tmp_path / "fcos_R-18-FPN_toy_seed1"
    calls = []
    monkeypatch.setattr(toy.subprocess, "run", _fake_training(calls))
    # Interrupted after a checkpoint: the same experiment's folder resumes, kept as it is.
    out_dir.mkdir()
    cmd = toy.train_command(config, "OUTPUT_DIR", str(out_dir), "SEED", "1")
    key = {"command": " ".join(["python"] + cmd[1:]).replace(toy.REPO + os.sep, ""),
           "config_digest": toy.config_digest(config)}
    (out_dir / "toy_run.json").write_text(json.dumps(key))
    (out_dir / "last_checkpoint").write_text("model_0000499.pth")
    (out_dir / "model_0000499.pth").write_text("weights")
    result = toy.run_one(config, str(tmp_path), seed=1)
    assert calls[-1][calls[-1].index(config) + 1] == "--resume"
    assert (out_dir / "model_0000499.pth").exists()
    assert result["resumed"] and math.isnan(result["minutes"]) and result["AP"] == 70.0
    assert result["command"] == key["command"]  # the experiment's command, without --resume
    # Another experiment in that folder (here: another seed's command) starts from scratch.
    (out_dir / "result.json").unlink()
    (out_dir / "toy_run.json").write_text(json.dumps({**key, "command": "python other"}))
    result = toy.run_one(config, str(tmp_path), seed=1)
    assert "--resume" not in calls[-1] and not (out_dir / "model_0000499.pth").exists()
    assert not result["resumed"] and result["minutes"] >= 0


def test_mask_models_get_a_mask_ap_table():
    segm = [{k: v for k in toy.SEGM_COLUMNS} for v in (84.0, 86.0)]
    runs = [_run("m.yaml", 0, 80.0, segm[0]), _run("m.yaml", 1, 81.0, segm[1]), _run("b.yaml", 0, 50.0)]
    rows = toy.summarise(runs)
    assert rows[0]["segm"]["AP"] == [84.0, 86.0] and rows[1]["segm"] is None
    text = toy.table(rows, "test machine")
    assert "| m.yaml | 85.0 ± 1.4 (2) | 85.0 ± 1.4 (2) |" in text.split("| config | mask AP")[1]
    assert "b.yaml" not in text.split("| config | mask AP")[1]


def test_config_digest_follows_settings_not_comments(tmp_path):
    base = tmp_path / "Base.yaml"
    base.write_text("SOLVER:\n  BASE_LR: 0.002\n")
    child = tmp_path / "child.yaml"
    child.write_text('_BASE_: "Base.yaml"\nSEED: 0\n')
    digest = toy.config_digest(str(child))
    child.write_text('# a comment\n_BASE_: "Base.yaml"\nSEED: 0  # and another\n')
    assert toy.config_digest(str(child)) == digest
    base.write_text("SOLVER:\n  BASE_LR: 0.003\n")  # a setting of an inherited file
    assert toy.config_digest(str(child)) != digest


def _model(name, *opts):
    cfg = get_cfg()
    add_common_config(cfg)
    cfg.merge_from_file(f"common/configs/{name}_R-18-FPN_toy.yaml")
    cfg.merge_from_list(["MODEL.DEVICE", "cpu", *opts])
    return build_model(cfg)


def test_retinanet_positives_of_a_box_equal_to_an_anchor():
    # Anchors 16, 20, 25.2 px x ratios 0.5/1/2 at stride 8 (offset 0: centres on multiples of
    # 8). A 16x16 box centred on (16, 16) has IoU 1 with the 16 px square anchor there, 0.64
    # with the 20 px square, 0.547 with both 16 px oblongs (22.6 x 11.3), 0.526 with both 20 px
    # oblongs (28.3 x 14.1); the 25.2 px anchors (0.40) and every anchor one stride away
    # (<= 0.44) and on P4 (<= 0.25) stay below 0.5: 6 positives.
    model = _model("retinanet", "MODEL.ANCHOR_GENERATOR.SIZES",
                   "[[16, 20, 25.198], [32, 40, 50.397], [64, 80, 100.79], [128, 161, 202],"
                   " [256, 322, 406]]")
    n, best = assignment.positives_per_object(model, torch.tensor([[8.0, 8.0, 24.0, 24.0]]),
                                              128, 128)
    assert n.tolist() == [6]
    assert best.item() == pytest.approx(1.0)


def test_fcos_positives_of_a_box_are_the_centre_points_inside_it():
    # FCOS points are at 4 + 8k on P3. A 24 px box [0, 24] has 3x3 points strictly inside it,
    # all within 1.5 strides (12 px) of its centre and with max distance 12-20 in P3's 0-64
    # range: 9 positives. A 16 px box [36, 52] has its outer points on its border: only (44, 44).
    model = _model("fcos")
    n, _ = assignment.positives_per_object(
        model, torch.tensor([[0.0, 0.0, 24.0, 24.0], [36.0, 36.0, 52.0, 52.0]]), 128, 128)
    assert n.tolist() == [9, 1]
