"""Faster R-CNN with the feature intertwiner: the sets' centroids by hand on constructed RoIs,
the meta-loss over the classes present on both sides, the make-up layer under the box head,
nothing of the meta branch at inference, images with only small / only large / no objects,
the switches, the COCO model's size, and a smoke run of train_net.py."""

import os

import pytest
import torch
from detectron2.modeling import build_model
from detectron2.structures import Boxes, Instances
from detectron2.utils.events import EventStorage
from internet import l2_meta_loss
from torchvision.ops import roi_align

from harness.projects import load_config
from harness.testing import check_eval_output, make_instances

PROJECT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOY = os.path.join(PROJECT, "configs", "toy")
COCO = os.path.join(PROJECT, "configs")


def toy_model(config="internet-l2_R-18-FPN_toy.yaml", *opts):
    torch.manual_seed(0)
    return build_model(load_config(os.path.join(TOY, config), ["MODEL.DEVICE", "cpu", *opts]))


# RoIs of constructed sizes: with the toy's canonical box size 28 / sqrt(2) (the official
# round(4 + log2(s / 28)) as a floor), sqrt(area) 8 -> P2, 14 -> P3, 28 -> P4, 80 -> P5.
# Label 6 is background.
BOXES = [[0, 0, 8, 8], [20, 20, 28, 28], [40, 40, 48, 48],    # P2
         [0, 0, 14, 14], [30, 30, 44, 44],                     # P3
         [10, 10, 38, 38], [60, 20, 88, 48],                   # P4
         [0, 0, 80, 80], [40, 40, 120, 120]]                   # P5
LABELS = [0, 1, 6, 0, 2, 1, 0, 2, 0]
SETS = {2: ([0, 1, 2], [3, 4, 5, 6, 7, 8]), 3: ([3, 4], [5, 6, 7, 8]), 4: ([5, 6], [7, 8])}


def constructed_proposals():
    p = Instances((128, 160))
    p.proposal_boxes = Boxes(torch.tensor(BOXES, dtype=torch.float32))
    p.gt_classes = torch.tensor(LABELS)
    return [p]


def test_centroids_of_the_two_sets_by_hand():
    heads = toy_model().roi_heads.train()
    proposals = constructed_proposals()
    assert heads.roi_levels([proposals[0].proposal_boxes]).tolist() == [2, 2, 2, 3, 3, 4, 4, 5, 5]
    torch.manual_seed(1)
    raw = [torch.randn(1, 64, 128 // 2 ** k, 160 // 2 ** k) for k in (2, 3, 4, 5)]
    made_up = [heads.makeup(x) for x in raw]
    (less_sum, less_count), (rel_sum, rel_count) = heads.centroid_sums(raw, made_up, proposals)

    rois = torch.cat([torch.zeros(9, 1), torch.tensor(BOXES, dtype=torch.float32)], dim=1)
    exp_less, exp_rel = torch.zeros(6, 256), torch.zeros(6, 256)
    exp_less_count, exp_rel_count = torch.zeros(6), torch.zeros(6)
    for level, (less, reliable) in SETS.items():
        i = level - 2
        # less reliable: this level's RoIs from the make-up output; reliable: the RoIs above,
        # from P_l itself. Both 14 x 14, then the critic; background left out.
        for idx, maps, sums, counts in ((less, made_up, exp_less, exp_less_count),
                                        (reliable, raw, exp_rel, exp_rel_count)):
            feats = heads.critic(roi_align(maps[i], rois[idx], 14, 1 / 2 ** level, 2, aligned=True))
            for f, j in zip(feats, idx):
                if LABELS[j] < 6:
                    sums[LABELS[j]] += f
                    counts[LABELS[j]] += 1
    torch.testing.assert_close(less_sum, exp_less)
    torch.testing.assert_close(rel_sum, exp_rel)
    assert less_count.tolist() == [3, 2, 1, 0, 0, 0] == exp_less_count.tolist()
    assert rel_count.tolist() == [6, 2, 4, 0, 0, 0] == exp_rel_count.tolist()
    assert less_sum.requires_grad and not rel_sum.requires_grad  # only the less reliable side learns


def test_meta_loss_uses_the_classes_present_on_both_sides_and_the_buffer():
    heads = toy_model().roi_heads.train()
    d = heads.critic.out_channels
    torch.manual_seed(2)
    steps = []
    for less_classes, rel_classes in (([0, 1], [1, 2]), ([0, 1, 3], [0])):
        less_sum, rel_sum = torch.rand(6, d), torch.rand(6, d)
        less_count, rel_count = torch.zeros(6), torch.zeros(6)
        less_count[less_classes] = torch.tensor([2.0, 3.0, 1.0][:len(less_classes)])
        rel_count[rel_classes] = torch.tensor([4.0, 1.0][:len(rel_classes)])
        less_sum[less_count == 0] = 0
        rel_sum[rel_count == 0] = 0
        steps.append(((less_sum, less_count), (rel_sum, rel_count)))
    heads.centroid_sums = lambda *_: steps.pop(0)
    first, second = steps[0], steps[1]

    # Step 1: buffer = {1, 2}; less reliable = {0, 1}: only class 1 counts.
    loss = heads.intertwiner_loss(None, None, None)
    (ls, lc), (rs, rc) = first
    torch.testing.assert_close(loss, l2_meta_loss(ls[[1]] / lc[[1], None], rs[[1]] / rc[[1], None]))
    # Step 2: buffer = {0, 1, 2} (class 0 new, 1 and 2 from history); less reliable = {0, 1, 3}:
    # classes 0 and 1, against the buffer's count-weighted means.
    loss = heads.intertwiner_loss(None, None, None)
    (ls2, lc2), (rs2, rc2) = second
    buffer_mean = torch.stack([rs2[0] / rc2[0], rs[1] / rc[1]])
    torch.testing.assert_close(loss, l2_meta_loss(ls2[[0, 1]] / lc2[[0, 1], None], buffer_mean))
    assert heads.buffer.count.tolist() == [4, 4, 1, 0, 0, 0]


def test_levels_round_as_the_official_assignment():
    """The official level is round(4 + log2(sqrt(wh) / (224 / sqrt(image area))) on the
    normalised box, i.e. round(4 + log2(side / 224)) in pixels, clamped to 2..5."""
    cfg = load_config(os.path.join(COCO, "internet_R-50-FPN_1x_coco.yaml"), ["MODEL.DEVICE", "cpu"])
    heads = build_model(cfg).roi_heads
    sides = torch.logspace(3, 10, 300, base=2, dtype=torch.float64)  # 8 px to 1024 px
    sides = sides[((torch.log2(sides / 224) % 1) - 0.5).abs() > 1e-6]  # no exact ties
    boxes = Boxes(torch.stack([torch.zeros_like(sides), torch.zeros_like(sides), sides, sides], 1).float())
    official = torch.round(4 + torch.log2(sides / 224)).clamp(2, 5).long()
    assert torch.equal(heads.roi_levels([boxes]), official)
    # Level 4 holds sides [224 / sqrt(2), 224 * sqrt(2)): 200 px is P4 here, P3 with floor.
    assert heads.roi_levels([Boxes(torch.tensor([[0.0, 0, 200, 200], [0, 0, 150, 150]]))]).tolist() == [4, 3]


def test_negative_ot_meta_loss_is_set_to_zero():
    heads = toy_model("internet_R-18-FPN_toy.yaml").roi_heads.train()
    d = heads.critic.out_channels
    count = torch.tensor([1.0, 0, 0, 0, 0, 0])
    heads.centroid_sums = lambda *_: ((torch.rand(6, d), count), (torch.rand(6, d), count))
    x = torch.rand(1, d)
    heads.ot.forward = lambda *_: torch.tensor(-0.5) * x.sum()
    assert heads.intertwiner_loss(None, None, None).item() == 0.0
    heads.ot.forward = lambda *_: torch.tensor(0.5)
    assert heads.intertwiner_loss(None, None, None).item() == 0.5


def test_box_head_pools_every_roi_from_the_make_up_output():
    model = toy_model().eval()
    heads = model.roi_heads
    made_up, pooled_from, meta = [], [], []
    heads.makeup.register_forward_hook(lambda m, i, o: made_up.append(o))
    heads.box_pooler.register_forward_hook(lambda m, i, o: pooled_from.extend(i[0]))
    heads.critic.register_forward_hook(lambda *_: meta.append(1))
    with torch.no_grad():
        model([{"image": torch.rand(3, 128, 160) * 255}])
    assert len(made_up) == 4 and all(a is b for a, b in zip(pooled_from, made_up))
    assert not meta and heads.buffer.count.sum() == 0  # nothing of the meta branch at inference


def train_step(model, boxes, classes):
    gt = make_instances(128, 160, boxes, classes)
    with EventStorage():
        losses = model([{"image": torch.rand(3, 128, 160) * 255, "instances": gt}] * 2)
    total = sum(losses.values())
    assert torch.isfinite(total)
    total.backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
    return losses


@pytest.mark.parametrize("config", ["internet-l2_R-18-FPN_toy.yaml", "internet_R-18-FPN_toy.yaml"])
def test_only_small_only_large_and_no_objects(config):
    model = toy_model(config).train()
    small = [[10, 10, 18, 18], [50, 60, 58, 68], [100, 30, 107, 37]]   # P2
    large = [[0, 0, 110, 120], [40, 20, 158, 126]]                      # P5
    # No object, or only small ones: no reliable foreground, an empty buffer, no meta-loss.
    for boxes, classes in (([], []), (small, [1, 1, 2])):
        assert train_step(model, boxes, classes)["loss_meta"].item() == 0.0
        assert model.roi_heads.buffer.count.sum() == 0
    # Only large ones: the buffer fills, but nothing is less reliable.
    assert train_step(model, large, [1, 2])["loss_meta"].item() == 0.0
    assert model.roi_heads.buffer.count[[1, 2]].min() > 0
    # Small objects of the classes in the buffer: now there is a meta-loss.
    assert train_step(model, small, [1, 1, 2])["loss_meta"].item() > 0


@pytest.mark.parametrize("config,makeup,meta", [
    ("internet-baseline_R-18-FPN_toy.yaml", False, "none"),
    ("internet-makeup_R-18-FPN_toy.yaml", True, "none"),
    ("internet-l2_R-18-FPN_toy.yaml", True, "l2"),
    ("internet_R-18-FPN_toy.yaml", True, "ot")])
def test_ablation_switches(config, makeup, meta):
    model = toy_model(config)
    heads = model.roi_heads
    assert (heads.makeup is not None) == makeup and heads.meta_loss == meta
    assert (heads.critic is not None) == (meta != "none") and (heads.ot is not None) == (meta == "ot")
    assert heads.box_pooler.canonical_box_size == pytest.approx(28 / 2 ** 0.5)
    if meta != "none":
        assert isinstance(heads.critic[-1], torch.nn.Sigmoid) == (meta == "l2")
        assert heads.meta_weight == {"l2": 10.0, "ot": 0.1}[meta]
    model.train()
    losses = train_step(model, [[10, 10, 18, 18], [0, 0, 110, 120]], [1, 1])
    assert ("loss_meta" in losses) == (meta != "none")


def test_bad_settings_fail_clearly():
    with pytest.raises(ValueError, match="META_LOSS"):
        toy_model("internet_R-18-FPN_toy.yaml", "MODEL.INTERNET.META_LOSS", "kl")
    with pytest.raises(ValueError, match="META_LEVELS"):
        toy_model("internet_R-18-FPN_toy.yaml", "MODEL.INTERNET.META_LEVELS", "[3, 5]")


def test_eval_mode_returns_instances_inside_the_image():
    check_eval_output(toy_model("internet_R-18-FPN_toy.yaml", "MODEL.ROI_HEADS.SCORE_THRESH_TEST", "0.0"),
                      num_classes=6)


def test_size_of_the_coco_model():
    def size(config):
        cfg = load_config(os.path.join(COCO, config), ["MODEL.DEVICE", "cpu"])
        return sum(p.numel() for p in build_model(cfg).parameters())

    internet, l2, faster = (size(f"{n}_R-50-FPN_1x_coco.yaml")
                            for n in ("internet", "internet-l2", "internet-baseline"))
    conv_bn = lambda cin, cout, k: cin * cout * k * k + cout + 2 * cout  # noqa: E731  (conv + bias, BN)
    makeup = conv_bn(256, 256, 3)
    critic = conv_bn(256, 512, 3) + conv_bn(512, 1024, 7) + conv_bn(1024, 1024, 1)
    ot = (1024 * 1024 * 3 + 1024) + (1024 * 256 * 3 + 256)
    assert l2 - faster == makeup + critic
    assert internet - faster == makeup + critic + ot


def test_the_buffer_is_part_of_the_checkpoint():
    """--resume continues with the buffer's history: its sums and counts are saved."""
    model = toy_model().train()
    train_step(model, [[0, 0, 110, 120], [40, 20, 158, 126]], [1, 2])
    state = model.state_dict()
    assert state["roi_heads.buffer.count"][[1, 2]].min() > 0
    assert torch.equal(state["roi_heads.buffer.count"], model.roi_heads.buffer.count)
