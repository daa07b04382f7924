"""The PBM model: paired RPN labels and losses, the paired R-CNN's visible loss by hand, empty
ground truth, post-processing of visible boxes, the COCO-size model, smoke train + eval."""

import math
import os

import pytest
import torch
from detectron2.modeling import build_model
from detectron2.structures import Boxes, Instances, pairwise_iou
from detectron2.utils.events import EventStorage
from pbm import pairwise_iof

from harness.projects import load_config
from harness.testing import check_eval_output, smoke_train_and_eval

HERE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOY = os.path.join(HERE, "configs", "toy", "pbm_R-18-FPN_toy_crowd.yaml")


def _model(*opts, config=TOY):
    torch.manual_seed(0)
    return build_model(load_config(config, ["MODEL.DEVICE", "cpu", *opts]))


def _gt(h, w, full, vis):
    inst = Instances((h, w))
    inst.gt_boxes = Boxes(torch.tensor(full, dtype=torch.float32).reshape(-1, 4))
    inst.gt_vis_boxes = Boxes(torch.tensor(vis, dtype=torch.float32).reshape(-1, 4))
    inst.gt_classes = torch.zeros(len(inst.gt_boxes), dtype=torch.long)
    return inst


def test_paired_rpn_positives_meet_both_conditions():
    rpn = _model().proposal_generator
    # Two people standing close (full IoU 0.5); one mostly hidden: only its head row shows.
    gt = _gt(128, 160, [[20, 10, 60, 110], [40, 10, 80, 110]], [[20, 10, 60, 110], [60, 10, 80, 30]])
    features = [torch.zeros(1, 64, 128 // s, 160 // s) for s in (4, 8, 16, 32, 64)]
    anchors = rpn.anchor_generator(features)
    with EventStorage():
        (labels,), (full,), (vis,) = rpn.label_and_sample_anchors(anchors, [gt])
    all_anchors = Boxes.cat(anchors)
    pos = torch.nonzero(labels == 1).squeeze(1)
    assert len(pos) > 0
    iou = pairwise_iou(Boxes(full[pos]), all_anchors[pos]).diagonal()
    iof = pairwise_iof(Boxes(vis[pos]), all_anchors[pos]).diagonal()
    # Every positive covers its pair's visible box (IoF >= 0.7); its full IoU is >= 0.7 unless
    # it is one of its pair's best anchors (low-quality match).
    assert (iof >= 0.7).all()
    gt_iou = pairwise_iou(gt.gt_boxes, all_anchors)
    gt_iof = pairwise_iof(gt.gt_vis_boxes, all_anchors)
    best = torch.where(gt_iof >= 0.7, gt_iou, torch.zeros_like(gt_iou)).max(1).values
    for k, a in enumerate(pos):
        g = int((full[a] == gt.gt_boxes.tensor).all(1).nonzero()[0])
        assert iou[k] >= 0.7 or iou[k] == pytest.approx(best[g].item())
    # The matched visible box belongs to the same person as the matched full box.
    for a in pos:
        g = int((full[a] == gt.gt_boxes.tensor).all(1).nonzero()[0])
        assert torch.equal(vis[a], gt.gt_vis_boxes.tensor[g])
    # Negatives overlap every full box by IoU < 0.3.
    neg = labels == 0
    assert (gt_iou[:, neg] < 0.3).all()


def test_visible_loss_of_the_paired_rcnn_by_hand():
    predictor = _model().roi_heads.box_predictor
    props = Instances((100, 100))
    props.proposal_boxes = Boxes(torch.tensor([[0.0, 0, 10, 20], [50, 50, 60, 60]]))
    props.proposal_vis_boxes = Boxes(torch.tensor([[0.0, 0, 10, 20], [50, 50, 60, 60]]))
    props.gt_classes = torch.tensor([0, 1])  # a person and a background pair
    props.gt_boxes = Boxes(torch.tensor([[0.0, 0, 10, 20], [0, 0, 1, 1]]))
    props.gt_vis_boxes = Boxes(torch.tensor([[1.0, 1, 11, 21], [0, 0, 1, 1]]))
    scores, zeros = torch.zeros(2, 2), torch.zeros(2, 4)
    with EventStorage():
        losses = predictor.losses((scores, zeros, zeros), [props])
    # Visible target of the person with weights (10, 10, 5, 5): dx = (6 - 5) / 10 * 10 = 1,
    # dy = (11 - 10) / 20 * 10 = 0.5, dw = dh = 0; L1 (beta 0) of zero predictions = 1.5,
    # over the 2 sampled pairs -> 0.75. The full box is exact -> 0.
    assert losses["loss_box_reg_vis"].item() == pytest.approx(0.75)
    assert losses["loss_box_reg"].item() == 0
    assert losses["loss_cls"].item() == pytest.approx(math.log(2))


def test_empty_ground_truth_trains_without_nan():
    model = _model()
    model.train()
    empty = _gt(128, 160, [], [])
    people = _gt(128, 160, [[20, 10, 60, 110]], [[20, 10, 60, 60]])
    batch = [{"image": torch.rand(3, 128, 160) * 255, "instances": empty},
             {"image": torch.rand(3, 128, 160) * 255, "instances": people}]
    with EventStorage():
        losses = model(batch[:1])
        assert all(torch.isfinite(v) for v in losses.values())
        # No person: nothing to regress, only negatives to classify.
        for k in ("loss_rpn_loc", "loss_rpn_vis_loc", "loss_box_reg", "loss_box_reg_vis"):
            assert losses[k].item() == 0, k
        assert losses["loss_cls"].item() > 0 and losses["loss_rpn_cls"].item() > 0
        sum(losses.values()).backward()
        losses = model(batch)  # a batch with and without people
        assert all(torch.isfinite(v) for v in losses.values())
        assert losses["loss_box_reg_vis"].item() > 0


def test_eval_output_has_visible_boxes_at_the_original_size():
    model = _model()
    check_eval_output(model, num_classes=1)
    image = torch.rand(3, 97, 131) * 255
    with torch.no_grad():
        raw = model.inference([{"image": image}], do_postprocess=False)[0]
        (out,) = model([{"image": image, "height": 194, "width": 262}])
    inst = out["instances"]
    assert inst.has("pred_vis_boxes") and len(inst) == len(raw)
    expected = raw.pred_vis_boxes.tensor * torch.tensor([262 / 131, 194 / 97] * 2)
    expected[:, 0::2] = expected[:, 0::2].clamp(0, 262)
    expected[:, 1::2] = expected[:, 1::2].clamp(0, 194)
    torch.testing.assert_close(inst.pred_vis_boxes.tensor, expected)


def test_crowdhuman_model_size_by_hand():
    """PBM R-50-FPN minus the Faster R-CNN baseline, layer by layer: fc6 takes the 2 x 256
    channel PPFE feature (+256 x 7 x 7 x 1024), the RPN predicts 8 instead of 4 deltas for each
    of 3 anchors (+12 x 257), the visible regressor (1024 x 4 + 4)."""
    base = os.path.join(HERE, "configs", "faster_rcnn_R-50-FPN_crowdhuman.yaml")
    pbm = os.path.join(HERE, "configs", "pbm_R-50-FPN_crowdhuman.yaml")
    n_base = sum(p.numel() for p in _model(config=base).parameters())
    n_pbm = sum(p.numel() for p in _model(config=pbm).parameters())
    assert n_pbm - n_base == 256 * 49 * 1024 + 12 * 257 + 1024 * 4 + 4


@pytest.mark.slow
def test_smoke_train_and_eval_with_crowd_metrics(tmp_path, capsys):
    metrics = smoke_train_and_eval(
        os.path.join(HERE, "train_net.py"), "configs/toy/pbm_R-18-FPN_toy_crowd.yaml", tmp_path,
        task="crowd",
    )
    final = [m for m in metrics if "crowd/MR" in m][-1]
    assert {"crowd/AP", "crowd/MR", "crowd/recall", "crowd/JI"} <= final.keys()
    detections = tmp_path / "inference" / "crowd_detections.odgt"
    assert os.path.isfile(detections)
    assert {"crowd_visible/AP", "crowd_visible/MR"} <= final.keys()
    # The error analysis reads what the evaluator wrote.
    from common.data import toy
    from common.evaluation.crowd_errors import main

    val = toy.generate("toy_crowd", "val")
    main([os.path.join(val, "annotations.odgt"), os.path.join(val, "images"), str(detections)])
    assert "duplicate FPs" in capsys.readouterr().out


def test_training_batches_carry_visible_boxes():
    """train_net.py's Trainer (which make bench uses too) maps toy_crowd with visible boxes;
    the baseline config keeps detectron2's loader."""
    from harness.projects import trainer_class

    trainer = trainer_class(TOY)
    cfg = load_config(TOY, ["MODEL.DEVICE", "cpu", "SOLVER.IMS_PER_BATCH", "2",
                            "DATALOADER.NUM_WORKERS", "0"])
    batch = next(iter(trainer.build_train_loader(cfg)))
    for d in batch:
        inst = d["instances"]
        assert len(inst) > 0 and inst.has("gt_vis_boxes")
        full, vis = inst.gt_boxes.tensor, inst.gt_vis_boxes.tensor
        # toy_crowd's visible box lies inside the full box (up to resizing round-off)
        assert (vis[:, :2] >= full[:, :2] - 1e-3).all() and (vis[:, 2:] <= full[:, 2:] + 1e-3).all()


def test_pairs_whose_visible_proposal_is_empty_are_dropped():
    """A visible proposal regressed out of the image is clipped to zero width; its pair must not
    reach the R-CNN (whose regression targets need a box of positive size: with
    RCNN_VIS_IOU_THRESH 0 such a pair would be a positive)."""
    rpn = _model().proposal_generator
    rpn.eval()
    anchors = [Boxes(torch.tensor([[10.0, 10, 30, 50], [40, 10, 60, 50]]))]
    logits = [torch.tensor([[2.0, 1.0]])]
    full = [torch.zeros(1, 2, 4)]
    vis = [torch.tensor([[[0.0, 0, 0, 0], [100.0, 0, 0, 0]]])]  # the 2nd moves 2000 px right
    (props,) = rpn.predict_paired_proposals(anchors, logits, full, vis, [(100, 100)])
    assert props.proposal_boxes.tensor.tolist() == [[10, 10, 30, 50]]
    assert props.proposal_vis_boxes.tensor.tolist() == [[10, 10, 30, 50]]
    assert props.objectness_logits.tolist() == [2.0]


BASELINE = os.path.join(HERE, "configs", "toy", "faster_rcnn_R-18-FPN_toy_crowd.yaml")
CROWD_BASELINE = ["MODEL.PROPOSAL_GENERATOR.NAME", "CrowdRPN", "MODEL.ROI_HEADS.NAME", "CrowdROIHeads"]


@pytest.mark.parametrize("paired", [False, True])
def test_rpn_top_k_and_nms_over_all_levels(paired):
    """CrowdDet's proposal selection: one top-k and one NMS over all levels. Two anchors on two
    levels, IoU 9 / 11 = 0.82: per level both survive; over all levels the NMS keeps one, and a
    top-1 keeps the best of all levels."""
    opts = [] if paired else CROWD_BASELINE
    anchors = [Boxes(torch.tensor([[0.0, 0, 10, 10]])), Boxes(torch.tensor([[1.0, 0, 11, 10]]))]
    logits = [torch.tensor([[1.0]]), torch.tensor([[2.0]])]
    deltas = [torch.zeros(1, 1, 4), torch.zeros(1, 1, 4)]
    kept = {}
    for across in (False, True):
        for topk in (1, 10):
            m = _model(*opts, "MODEL.PBM.RPN_TOPK_ACROSS_LEVELS", str(across),
                       "MODEL.RPN.PRE_NMS_TOPK_TEST", str(topk), config=TOY if paired else BASELINE).eval()
            rpn = m.proposal_generator
            if paired:
                (p,) = rpn.predict_paired_proposals(anchors, logits, deltas, deltas, [(40, 40)])
            else:
                (p,) = rpn.predict_proposals(anchors, logits, deltas, [(40, 40)])
            kept[across, topk] = p.proposal_boxes.tensor[:, 0].tolist()
    assert kept[False, 10] == kept[False, 1] == [1.0, 0.0]  # per level: one each, by score
    assert kept[True, 10] == kept[True, 1] == [1.0]


@pytest.mark.parametrize("paired", [False, True])
def test_rois_in_ignore_regions_are_neither_foreground_nor_background(paired):
    """CrowdDet's baseline: the RPN's targets are the people; a RoI in an ignore region is not
    sampled, one elsewhere is background (the baseline's CrowdROIHeads and PBM's heads)."""
    m = _model(*([] if paired else CROWD_BASELINE), config=TOY if paired else BASELINE).train()
    heads = m.roi_heads
    heads.proposal_append_gt = False
    gt = _gt(128, 160, [[20, 10, 60, 110], [100, 0, 160, 60]], [[20, 10, 60, 60], [100, 0, 160, 60]])
    gt.gt_ignore = torch.tensor([False, True])  # the second box: an ignore region, as the mapper marks it
    boxes = torch.tensor([[20.0, 10, 60, 110],    # the person: foreground
                          [110, 10, 150, 50],     # inside the ignore region: ignored
                          [0, 100, 20, 128]])     # elsewhere: background
    p = Instances((128, 160), proposal_boxes=Boxes(boxes), objectness_logits=torch.zeros(3))
    if paired:
        vis = [[20.0, 10, 60, 60], [110, 10, 150, 50], [0, 100, 20, 128]]
        p.proposal_vis_boxes = Boxes(torch.tensor(vis))
    with EventStorage():
        (out,) = heads.label_and_sample_proposals([p], [gt])
    sampled = {tuple(b): int(c) for b, c in zip(out.proposal_boxes.tensor.tolist(), out.gt_classes)}
    assert sampled == {(20.0, 10.0, 60.0, 110.0): 0, (0.0, 100.0, 20.0, 128.0): 1}
    assert torch.equal(out.gt_boxes.tensor[out.gt_classes == 0], gt.gt_boxes.tensor[:1])
    # The RPN's targets are the people only.
    seen = []
    rpn = m.proposal_generator
    real = rpn.label_and_sample_anchors
    rpn.label_and_sample_anchors = lambda a, gts: seen.extend(len(g) for g in gts) or real(a, gts)
    strides = (4, 8, 16, 32, 64)
    features = {f: torch.zeros(1, 64, 128 // s, 160 // s) for f, s in zip(rpn.in_features, strides)}
    images = type("Images", (), {"image_sizes": [(128, 160)], "tensor": torch.zeros(1, 3, 128, 160)})()
    with EventStorage():
        rpn(images, features, [gt])
    assert seen == [1]
