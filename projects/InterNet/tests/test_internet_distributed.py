"""The intertwiner on 2 processes with the make-up layer's statistics over processes
(naiveSyncBN, what the README's SyncBN becomes on CPU): the processes hold deliberately
different RoIs, one of them no less reliable RoI at all, so they call the critic a different
number of times. The critic's BatchNorm is in eval mode and issues no collective, so neither
process waits on the other, and the process that holds all less reliable RoIs gets what one
process alone computes."""

import os
from datetime import timedelta

import torch
from detectron2.structures import Boxes, Instances
from detectron2.utils import comm
from test_internet_model import BOXES, LABELS, constructed_proposals, toy_model

from common.engine import launch

CONFIG = "internet_R-18-FPN_toy.yaml"


def _features():
    torch.manual_seed(1)
    return [torch.randn(1, 64, 128 // 2 ** k, 160 // 2 ** k, dtype=torch.float64) for k in (2, 3, 4, 5)]


def _centroid_sums_on_rank(out):
    heads = toy_model(CONFIG, "MODEL.INTERNET.NORM", "naiveSyncBN").roi_heads.train().double()
    calls = []
    heads.critic.register_forward_hook(lambda module, inputs, output: calls.append(len(inputs[0])))
    if comm.get_rank() == 0:  # only the two P5 RoIs: no level has a less reliable set
        proposals = Instances((128, 160), proposal_boxes=Boxes(torch.tensor(BOXES[7:], dtype=torch.float64)),
                              gt_classes=torch.tensor(LABELS[7:]))
        proposals = [proposals]
    else:
        proposals = constructed_proposals()
    raw = _features()  # the same maps on both processes: the make-up layer's statistics are one process's
    made_up = [heads.makeup(x) for x in raw]
    (less_sum, less_count), (rel_sum, rel_count) = heads.centroid_sums(raw, made_up, proposals)
    torch.save({"calls": calls, "less": (less_sum.detach(), less_count), "reliable": (rel_sum, rel_count)},
               os.path.join(out, f"rank{comm.get_rank()}.pt"))


def test_different_roi_counts_per_process_need_no_common_critic_calls(tmp_path):
    # A collective one process issues and the other does not fails in a minute, not hangs.
    launch(_centroid_sums_on_rank, 2, dist_url="auto", args=(str(tmp_path),),
           timeout=timedelta(minutes=1))
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt") for r in (0, 1))
    # Process 0 has no less reliable RoI: no critic call, nothing in either set.
    assert r0["calls"] == [] and r0["less"][1].sum() == 0 and r0["reliable"][1].sum() == 0
    # Process 1: both sets of each of the 3 meta levels (3 + 6, 2 + 4, 2 + 2 RoIs).
    assert r1["calls"] == [3, 6, 2, 4, 2, 2]

    heads = toy_model(CONFIG).roi_heads.train().double()
    raw = _features()
    made_up = [heads.makeup(x) for x in raw]
    (less_sum, less_count), (rel_sum, rel_count) = heads.centroid_sums(raw, made_up, constructed_proposals())
    assert r1["less"][1].tolist() == less_count.tolist() == [3, 2, 1, 0, 0, 0]
    torch.testing.assert_close(r1["less"][0], less_sum.detach(), rtol=1e-6, atol=1e-8)
    assert r1["reliable"][1].tolist() == rel_count.tolist()
    torch.testing.assert_close(r1["reliable"][0], rel_sum, rtol=1e-6, atol=1e-8)
