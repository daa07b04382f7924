"""Stop after k iterations, --resume: the iteration count and the optimizer state continue."""

import pytest
import torch

from harness.testing import run_module

CONFIG = "common/configs/retinanet_R-18-FPN_toy.yaml"


def _train(out, max_iter, *extra):
    r = run_module(
        "common.train_net", "--config-file", CONFIG, *extra,
        "SOLVER.MAX_ITER", str(max_iter), "SOLVER.CHECKPOINT_PERIOD", "2",
        "SOLVER.IMS_PER_BATCH", "2", "DATASETS.TEST", "()", "OUTPUT_DIR", str(out),
    )
    assert r.returncode == 0, r.stderr[-3000:]
    return r.stdout + r.stderr


def _load(path):
    return torch.load(path, map_location="cpu", weights_only=False)


def _adam_steps(ckpt):
    return {int(s["step"]) for s in ckpt["trainer"]["_trainer"]["optimizer"]["state"].values()}


@pytest.mark.slow
def test_resume_continues_iteration_and_optimizer(tmp_path):
    _train(tmp_path, 4)
    first = _load(tmp_path / "model_final.pth")
    assert first["iteration"] == 3 and _adam_steps(first) == {4}
    assert (tmp_path / "model_0000001.pth").is_file() and (tmp_path / "model_0000003.pth").is_file()

    log = _train(tmp_path, 6, "--resume")
    assert "Starting training from iteration 4" in log
    second = _load(tmp_path / "model_final.pth")
    assert second["iteration"] == 5
    # 4 AdamW steps before the stop + 2 after it: the moments were restored, not restarted.
    assert _adam_steps(second) == {6}
    assert second["trainer"]["hooks"]["LRScheduler"]["last_epoch"] == 6
    changed = [k for k in first["model"] if not torch.equal(first["model"][k], second["model"][k])]
    assert changed
