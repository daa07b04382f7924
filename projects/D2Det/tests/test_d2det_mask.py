"""D2Det's instance segmentation: every target and score of the mask branch against values
worked out by hand from the official code, the mask head's wiring, the detector with masks on
(training with and without objects, the inference outputs), the mask-score evaluator, and the
size of the COCO model."""

import json
import os
import runpy

import numpy as np
import pycocotools.mask as mask_util
import pytest
import torch
import torch.nn.functional as F
from d2det import D2DetMaskHead, MaskScoreCOCOEvaluator
from d2det.instance_segmentation import (
    area_ratios,
    mask_iou_targets,
    mask_losses,
    mask_scores,
    overlap_from_masks,
)
from detectron2.data import MetadataCatalog
from detectron2.modeling import build_model
from detectron2.structures import BitMasks, Boxes, Instances, PolygonMasks
from detectron2.utils.events import EventStorage

from harness.projects import load_config
from harness.testing import make_instances

PROJECT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOY = os.path.join(PROJECT, "configs", "toy", "d2det-mask_R-18-FPN_toy.yaml")


def toy_model(*opts):
    torch.manual_seed(0)
    return build_model(load_config(TOY, ["MODEL.DEVICE", "cpu", *opts]))


def test_overlap_targets_are_the_mask_at_one_quarter():
    # Official: bilinear x1/4 (align_corners False) then > 0.5. Each 7 x 7 cell reads the mean
    # of the central 2 x 2 pixels of its 4 x 4 block (rows/cols 4j + 1, 4j + 2): a cell is
    # positive when 3 or 4 of them are set, whatever the 12 other pixels of the block.
    m = torch.zeros(1, 28, 28)
    m[0, 1, 1] = m[0, 1, 2] = m[0, 2, 1] = 1           # cell (0, 0): 3 of 4 -> 1
    m[0, 1, 5] = m[0, 2, 6] = 1                        # cell (0, 1): 2 of 4 -> 0
    m[0, 4:8, 8:12] = 1
    m[0, 5:7, 9:11] = 0                                # cell (1, 2): full ring, empty centre -> 0
    m[0, 24:28, 24:28] = 1                             # cell (6, 6): full -> 1
    expected = torch.zeros(1, 7, 7)
    expected[0, 0, 0] = expected[0, 6, 6] = 1
    assert torch.equal(overlap_from_masks(m), expected)


def test_area_ratio_crops_the_truncated_box_inclusively():
    gt = torch.zeros(1, 10, 10, dtype=torch.bool)
    gt[0, 2:8, 1:9] = True                             # 6 x 8 = 48 pixels
    # (2.7, 3.2, 5.9, 6.99) -> int (2, 3, 5, 6) -> rows 3..6, cols 2..5: 4 x 4 = 16 inside.
    ratio = area_ratios(torch.tensor([[2.7, 3.2, 5.9, 6.99]]), BitMasks(gt))
    assert ratio.item() == pytest.approx(16 / 48)
    assert area_ratios(torch.zeros(0, 4), BitMasks(gt[:0])).shape == (0,)


def test_area_ratio_of_polygons_equals_that_of_their_full_image_bitmaps():
    # COCO's polygons are rasterised over the RoI and over their own extent only; the counts
    # must be those of the full-image bitmap (detectron2's BitMasks.from_polygon_masks).
    polygons = PolygonMasks([
        [np.array([10.3, 12.0, 50.7, 15.2, 44.0, 61.9, 8.5, 40.0])],
        [np.array([60.0, 5.0, 90.0, 5.0, 90.0, 30.0]), np.array([70.2, 40.0, 85.0, 44.0, 72.0, 58.5])],
    ])
    bitmaps = BitMasks.from_polygon_masks(polygons, 80, 100)
    boxes = torch.tensor([[20.6, 18.2, 47.9, 70.0], [58.0, 0.0, 88.3, 50.2]])
    torch.testing.assert_close(area_ratios(boxes, polygons), area_ratios(boxes, bitmaps))
    assert 0.2 < area_ratios(boxes, polygons).min() and area_ratios(boxes, polygons).max() < 1
    with pytest.raises(TypeError, match="BitMasks or PolygonMasks"):
        area_ratios(boxes, torch.zeros(2, 80, 100))


def test_mask_iou_target_by_hand():
    # A 4 x 4 RoI map. GT: the left half (8 px), and the RoI holds half of the GT's pixels
    # (ratio 0.5), so the whole GT is 16 px in these units. Predicted: logits 0.6 on the left
    # 3 columns (12 px). Logits 0.4 (sigmoid 0.6) elsewhere are *not* predicted: the official
    # thresholds the logits at 0.5. Overlap 8; IoU = 8 / (12 + 16 - 8) = 0.4.
    logits = torch.full((1, 4, 4), 0.4)
    logits[0, :, :3] = 0.6
    target = torch.zeros(1, 4, 4)
    target[0, :, :2] = 1
    t = mask_iou_targets(logits, target, torch.tensor([0.5]))
    assert t.item() == pytest.approx(0.4, abs=1e-6)


def test_mask_losses_by_hand():
    # Two positives of class 1 and 0 (K = 2), 2 x 2 masks.
    logits = torch.zeros(2, 2, 2, 2)
    logits[0, 1] = torch.tensor([[2.0, 2.0], [-2.0, -2.0]])   # predicts the top row
    logits[1, 0] = torch.tensor([[2.0, -2.0], [-2.0, -2.0]])  # predicts one pixel
    targets = torch.tensor([[[1.0, 1.0], [0.0, 0.0]], [[0.0, 0.0], [0.0, 1.0]]])
    iou_pred = torch.tensor([[0.0, 0.7], [0.3, 0.0]])
    classes = torch.tensor([1, 0])
    ratios = torch.tensor([0.8, 1.0])
    out = mask_losses(logits, iou_pred, classes, targets, ratios, mask_weight=1.0, iou_weight=0.5)
    # BCE: positive 0 is right on all 4 pixels (each -log sigmoid(2)); positive 1 is wrong on
    # 2 (each -log sigmoid(-2)) and right on 2.
    right, wrong = -np.log(1 / (1 + np.exp(-2))), -np.log(1 / (1 + np.exp(2)))
    assert out["loss_mask"].item() == pytest.approx((6 * right + 2 * wrong) / 8, rel=1e-5)
    # IoU targets: 2 / (2 + 2 / 0.8 - 2) = 0.8 (weight 1) and 0 / (1 + 1) = 0 (<= 0.1: weight
    # 0). MSE over both positives: (0.7 - 0.8)^2 / 2, x 0.5.
    assert out["loss_mask_iou"].item() == pytest.approx(0.5 * 0.01 / 2, rel=1e-4)
    # As in the official float32 arithmetic, a perfect mask of a GT wholly inside its RoI
    # gets a target just above 1 (the 1e-7 guards), so it is left out (weight 0).
    assert mask_iou_targets(logits[:1, 1], targets[:1], torch.tensor([1.0])).item() > 1.0
    zero = mask_losses(logits[:0], iou_pred[:0], classes[:0], targets[:0], ratios[:0])
    assert zero["loss_mask"].item() == 0 and zero["loss_mask_iou"].item() == 0


def test_mask_score_is_box_score_plus_0_3_mask_iou():
    iou = torch.tensor([[0.2, 0.9], [0.5, 0.1]])
    s = mask_scores(iou, torch.tensor([1, 0]), torch.tensor([0.6, 0.4]))
    assert torch.allclose(s, torch.tensor([0.6 + 0.3 * 0.9, 0.4 + 0.3 * 0.5]))


def test_mask_head_wiring():
    torch.manual_seed(0)
    head = D2DetMaskHead(in_channels=36, num_classes=3, deconv_dim=32, fc_dim=64)
    x = torch.randn(2, 36, 7, 7, requires_grad=True)
    logits, iou = head(x, torch.tensor([2, 0]))
    assert logits.shape == (2, 3, 28, 28) and iou.shape == (2, 3)
    # The IoU head reads the class's mask detached, max-pooled 4x4/4 with padding 1 (7 x 7).
    own = logits[[0, 1], [2, 0]].detach()[:, None]
    y = torch.cat([x, F.max_pool2d(own, 4, 4, 1).sigmoid()], 1).flatten(1)
    for fc in head.fcs:
        y = F.relu(fc(y))
    assert torch.allclose(iou, head.iou(y), atol=1e-6)
    iou.sum().backward()
    assert head.predictor.weight.grad is None and head.deconv1.weight.grad is None
    assert x.grad.abs().sum() > 0


def test_training_with_masks_with_and_without_objects():
    model = toy_model().train()
    images = [
        {"image": torch.rand(3, 128, 128) * 255, "instances": make_instances(128, 128, [], [])},
        {"image": torch.rand(3, 128, 128) * 255,
         "instances": make_instances(128, 128, [[10.0, 20, 70, 90], [60, 50, 120, 110]], [0, 3])},
    ]
    for d in images:
        inst = d["instances"]
        m = torch.zeros(len(inst), 128, 128, dtype=torch.bool)
        for k, (x0, y0, x1, y1) in enumerate(inst.gt_boxes.tensor.int().tolist()):
            m[k, y0:y1, x0:(x0 + x1) // 2] = True    # the left half of each box
        inst.gt_masks = BitMasks(m)
    with EventStorage():
        losses = model(images)
        only_empty = model(images[:1])
    assert {"loss_mask", "loss_mask_iou", "loss_dense_reg", "loss_overlap"} <= set(losses)
    assert all(torch.isfinite(v) for v in losses.values()) and losses["loss_mask"] > 0
    assert only_empty["loss_mask"].item() == 0 and only_empty["loss_mask_iou"].item() == 0
    sum(losses.values()).backward()
    assert model.roi_heads.d2det_mask_head.predictor.weight.grad.abs().sum() > 0
    assert not hasattr(model.roi_heads, "mask_head")  # detectron2's mask head is not built


def test_training_without_masks_in_the_data_is_one_clear_error():
    model = toy_model().train()
    image = {"image": torch.rand(3, 128, 128) * 255,
             "instances": make_instances(128, 128, [[10.0, 20, 70, 90]], [0])}
    with EventStorage(), pytest.raises(ValueError, match="no instance masks"):
        model([image])


def test_inference_outputs_masks_and_mask_scores_without_soft_nms():
    model = toy_model("MODEL.ROI_HEADS.SCORE_THRESH_TEST", "0.0").eval()
    heads = model.roi_heads
    with torch.no_grad():
        out = model([{"image": torch.rand(3, 128, 160) * 255, "height": 128, "width": 160}])[0]["instances"]
        assert len(out) == heads.detections_per_image or len(out) > 0
        assert out.pred_masks.shape[1:] == (128, 160) and out.pred_masks.dtype == torch.bool
        # mask score = box score + 0.3 x the predicted class's mask IoU, recomputed here.
        features = model.backbone(model.preprocess_image([{"image": torch.rand(3, 128, 160)}]).tensor)
    empty = Instances((128, 160))
    empty.pred_boxes, empty.scores = Boxes(torch.zeros(0, 4)), torch.zeros(0)
    empty.pred_classes = torch.zeros(0, dtype=torch.long)
    with torch.no_grad():
        res = heads._refine(features, [empty])[0]
    assert res.pred_masks.shape == (0, 1, 28, 28) and len(res.mask_scores) == 0
    # No soft-NMS with masks on: two same-class boxes with IoU 0.8 keep their scores.
    two = Instances((128, 160))
    two.pred_boxes = Boxes(torch.tensor([[10.0, 10, 60, 60], [12.0, 12, 62, 62]]))
    two.scores, two.pred_classes = torch.tensor([0.9, 0.8]), torch.tensor([1, 1])
    with torch.no_grad():
        res = heads._refine(features, [two])[0]
        x = heads.reg_pooler([features[f] for f in heads.box_in_features], [res.pred_boxes])
        _, _, reg_features = heads.reg_head(x, return_features=True)
        _, iou = heads.d2det_mask_head(reg_features, res.pred_classes)
    assert torch.equal(res.scores, torch.tensor([0.9, 0.8]))
    assert torch.allclose(res.mask_scores, res.scores + 0.3 * iou[:, 1])


def test_evaluator_ranks_masks_by_mask_score(tmp_path, capsys):
    # One image, one object (a 20 x 20 square). Detection A: right box, wrong mask, box score
    # 0.9, mask score 0.5. Detection B: right box, right mask, box score 0.8, mask score 0.95.
    # Ranked by mask score, the right mask comes first: segm AP 100; by box score it would not.
    h = w = 64
    gt = np.zeros((h, w), np.uint8)
    gt[10:30, 10:30] = 1
    rle = mask_util.encode(np.asfortranarray(gt))
    rle["counts"] = rle["counts"].decode()
    js = tmp_path / "gt.json"
    js.write_text(json.dumps({
        "images": [{"id": 1, "file_name": "a.png", "height": h, "width": w}],
        "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [10, 10, 20, 20],
                         "area": 400, "iscrowd": 0, "segmentation": rle}],
        "categories": [{"id": 1, "name": "square"}]}))
    name = f"d2det_mask_eval_{tmp_path.name}"
    MetadataCatalog.get(name).set(json_file=str(js), thing_classes=["square"], evaluator_type="coco",
                                  thing_dataset_id_to_contiguous_id={1: 0})
    wrong = np.zeros((h, w), bool)
    wrong[40:60, 40:60] = True
    inst = Instances((h, w))
    inst.pred_boxes = Boxes(torch.tensor([[10.0, 10, 30, 30]] * 2))
    inst.scores = torch.tensor([0.9, 0.8])
    inst.mask_scores = torch.tensor([0.5, 0.95])
    inst.pred_classes = torch.tensor([0, 0])
    inst.pred_masks = torch.as_tensor(np.stack([wrong, gt.astype(bool)]))
    results = {}
    # The folders train_net.py uses: inference/ (boxes) and inference/segm/ (masks).
    for task, out in (("bbox", tmp_path / "inference"), ("segm", tmp_path / "inference" / "segm")):
        ev = MaskScoreCOCOEvaluator(name, task, output_dir=str(out), distributed=False,
                                    use_fast_impl=False)
        ev.reset()
        ev.process([{"image_id": 1}], [{"instances": inst}])
        results.update(ev.evaluate())
    assert set(results) == {"bbox", "segm"}
    assert results["segm"]["AP"] == pytest.approx(100.0)
    assert results["bbox"]["AP"] == pytest.approx(100.0)
    assert inst.scores.tolist() == pytest.approx([0.9, 0.8])  # the caller's output is untouched
    # tools/segm_score_ablation.py reads the two files back and ranks the masks both ways.
    tool = runpy.run_path(os.path.join(PROJECT, "tools", "segm_score_ablation.py"))
    tool["main"]([str(js), str(tmp_path / "inference")])
    lines = capsys.readouterr().out.splitlines()
    assert lines[-2].startswith("masks ranked by mask score: AP 100.0")
    assert lines[-1].startswith("masks ranked by box score:") and "AP 100.0" not in lines[-1]
    # The same masks ranked by box score: the wrong mask first, AP at IoU 0.5 still 100 but
    # the precision at rank 1 is 0, so AP falls.
    inst.mask_scores = inst.scores
    ev = MaskScoreCOCOEvaluator(name, "segm", output_dir=str(tmp_path / "s2"), distributed=False,
                                use_fast_impl=False)
    ev.reset()
    ev.process([{"image_id": 1}], [{"instances": inst}])
    assert ev.evaluate()["segm"]["AP"] < 100.0


def test_size_of_the_coco_mask_model():
    def size(config, *opts):
        cfg = load_config(os.path.join(PROJECT, "configs", config), ["MODEL.DEVICE", "cpu", *opts])
        return sum(p.numel() for p in build_model(cfg).parameters())

    masks, boxes = size("d2det-mask_R-50-FPN_2x_coco.yaml"), size("d2det_R-50-FPN_2x_coco.yaml")
    # The mask branch, layer by layer from the official D2DetHead (MASK_ON), with 80 class
    # maps and IoUs where the official has 81 (its unused background channel).
    deconvs = (576 * 256 * 4 + 256) + 2 * 256 + (256 * 256 * 4 + 256)
    predictor = 256 * 80 * 9 + 80
    fcs = (577 * 7 * 7 * 1024 + 1024) + (1024 * 1024 + 1024) + (1024 * 80 + 80)
    assert masks - boxes == deconvs + predictor + fcs == 31_121_568
