"""ATSS assignment on constructed boxes, checked by hand and against a loop-by-loop reading of
Algorithm 1 of the ATSS paper."""

import statistics

import torch
from gfl import atss_assign


def grid(stride, cells, anchor_size):
    """Square anchors centred on the cells of a ``cells x cells`` grid, row-major (as
    detectron2's anchor generator with offset 0.5)."""
    c = (torch.arange(cells, dtype=torch.float32) + 0.5) * stride
    cy, cx = torch.meshgrid(c, c, indexing="ij")
    centres = torch.stack([cx.flatten(), cy.flatten()], dim=1)
    half = anchor_size / 2
    return torch.cat([centres - half, centres + half], dim=1)


def positives(matched):
    return {i: g for i, g in enumerate(matched.tolist()) if g >= 0}


def test_four_equidistant_candidates_with_equal_iou_are_all_positive():
    # GT centre (8, 8) is equally far from the anchors centred at (4|12, 4|12): indices 0, 1, 4,
    # 5. Each has IoU 144 / 368 with the GT, so std = 0 and all reach the threshold (>=).
    anchors = grid(8, 4, 16)
    matched = atss_assign([anchors], torch.tensor([[0.0, 0.0, 16.0, 16.0]]), topk=4)
    assert positives(matched) == {0: 0, 1: 0, 4: 0, 5: 0}


def test_equal_iou_ties_go_to_the_lower_gt_index():
    anchors = grid(8, 4, 16)
    gt = torch.tensor([[0.0, 0.0, 16.0, 16.0], [0.0, 0.0, 16.0, 16.0]])
    assert positives(atss_assign([anchors], gt, topk=4)) == {0: 0, 1: 0, 4: 0, 5: 0}


def test_higher_iou_wins_an_anchor_claimed_by_two_gts():
    anchors = grid(8, 4, 16)
    gt = torch.tensor([[0.0, 0.0, 16.0, 16.0], [4.0, 4.0, 20.0, 20.0]])  # GT 1 == anchor 5
    matched = atss_assign([anchors], gt, topk=4)
    assert matched[5].item() == 1  # IoU 1.0 beats 144/368
    assert matched[0].item() == 0


def test_gt_smaller_than_any_anchor_gets_the_anchor_at_its_centre():
    # A 4x4 GT centred on anchor 5 (16x16): candidates are anchor 5 (IoU 16/256) and, of the
    # four anchors at distance 8, the lowest indices 1, 4, 6 (IoU 8/264 each). Threshold =
    # mean + std = 0.0545: only anchor 5 passes.
    anchors = grid(8, 4, 16)
    matched = atss_assign([anchors], torch.tensor([[10.0, 10.0, 14.0, 14.0]]), topk=4)
    assert positives(matched) == {5: 0}


def test_gt_containing_no_anchor_centre_has_no_positive():
    anchors = grid(8, 4, 16)  # centres at 4, 12, 20, 28
    assert positives(atss_assign([anchors], torch.tensor([[5.0, 5.0, 11.0, 11.0]]), topk=9)) == {}


def test_degenerate_gt_has_no_positive():
    anchors = grid(8, 4, 16)
    assert positives(atss_assign([anchors], torch.tensor([[12.0, 4.0, 12.0, 30.0]]), topk=9)) == {}


def test_image_without_gt_is_all_background():
    anchors = grid(8, 4, 16)
    matched = atss_assign([anchors], torch.zeros(0, 4), topk=9)
    assert matched.shape == (16,) and (matched == -1).all()


def _reference(levels, gts, topk):
    """Algorithm 1 of ATSS, written out with Python loops."""
    anchors = [a for level in levels for a in level.tolist()]
    offsets = [0]
    for level in levels:
        offsets.append(offsets[-1] + len(level))

    def iou(a, b):
        w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
        h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
        inter = w * h
        return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)

    def centre(b):
        return (b[0] + b[2]) / 2, (b[1] + b[3]) / 2

    best = [(-1.0, -1)] * len(anchors)
    for g_idx, g in enumerate(gts.tolist()):
        gx, gy = centre(g)
        cands = []
        for lo, hi in zip(offsets[:-1], offsets[1:]):
            d = sorted(range(lo, hi), key=lambda i: (
                ((centre(anchors[i])[0] - gx) ** 2 + (centre(anchors[i])[1] - gy) ** 2), i))
            cands += d[:topk]
        ious = [iou(anchors[i], g) for i in cands]
        thr = statistics.mean(ious) + statistics.stdev(ious)
        for i, v in zip(cands, ious):
            x, y = centre(anchors[i])
            inside = min(x - g[0], y - g[1], g[2] - x, g[3] - y) > 0.01
            if v >= thr and inside and v > best[i][0]:
                best[i] = (v, g_idx)
    return [g for _, g in best]


def test_multi_level_assignment_matches_the_algorithm():
    # 96x96 image, strides 8/16/32, anchors 2x stride; a small, a medium and a large GT.
    levels = [grid(8, 12, 16), grid(16, 6, 32), grid(32, 3, 64)]
    gts = torch.tensor([[10.0, 12.0, 26.0, 30.0], [40.0, 30.0, 80.0, 62.0], [2.0, 5.0, 90.0, 93.0]])
    matched = atss_assign(levels, gts, topk=9)
    assert matched.tolist() == _reference(levels, gts, topk=9)
    # The small GT is learned on the finest level, the large one on the coarsest.
    level_of = torch.cat([torch.full((len(a),), i) for i, a in enumerate(levels)])
    assert set(level_of[matched == 0].tolist()) == {0}
    assert set(level_of[matched == 2].tolist()) == {2}
    assert all((matched == g).any() for g in range(3))
