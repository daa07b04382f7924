"""tools/visualize_assignment.py runs as a user would and its numbers hold: the positive
weights of each GT sum to 1 over the levels, and an untrained model's priors are the
initial ones."""

import json
import os

import pytest

from harness.testing import run_script

PROJECT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.slow
def test_visualize_assignment_writes_the_figures_and_consistent_weights(tmp_path):
    r = run_script(os.path.join(PROJECT, "tools", "visualize_assignment.py"),
                   "--config-file", "configs/toy/autoassign_R-18-FPN_toy.yaml", "--out", str(tmp_path),
                   cwd=PROJECT)
    assert r.returncode == 0, r.stderr[-3000:]
    assert os.path.getsize(tmp_path / "center_prior.png") > 0
    assert os.path.getsize(tmp_path / "positive_weights.png") > 0
    summary = json.load(open(tmp_path / "assignment.json"))
    assert all(v == [0.0, 0.0] for v in summary["mu"].values())
    assert all(v == [1.0, 1.0] for v in summary["sigma"].values())
    assert len(summary["gts"]) >= 3
    for gt in summary["gts"]:
        assert sum(gt["w+ per level"]) == pytest.approx(1.0, abs=1e-5)
