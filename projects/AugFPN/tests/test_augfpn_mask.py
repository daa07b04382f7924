"""AugFPN on Mask R-CNN: the mask RoIs through a Soft RoI Selection of their own, the auxiliary
mask loss of Consistent Supervision against detectron2's own mask loss, its initialisation,
images without objects, and the size of the COCO model."""

import os

import torch
from detectron2.modeling import build_model
from detectron2.modeling.roi_heads.mask_head import mask_rcnn_loss
from detectron2.structures import BitMasks, Boxes, Instances
from detectron2.utils.events import EventStorage
from torchvision.ops import roi_align

from harness.projects import load_config
from harness.testing import make_instances

PROJECT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOY = os.path.join(PROJECT, "configs", "toy", "augfpn-mask_R-18-FPN_toy.yaml")


def toy_model(*opts):
    torch.manual_seed(0)
    return build_model(load_config(TOY, ["MODEL.DEVICE", "cpu", *opts]))


def foreground_proposals():
    p = Instances((96, 128))
    p.proposal_boxes = Boxes(torch.tensor([[10.0, 12.0, 50.0, 60.0], [60.0, 20.0, 120.0, 90.0]]))
    p.gt_classes = torch.tensor([2, 5])
    m = torch.zeros(2, 96, 128, dtype=torch.bool)
    m[0, 10:58, 12:40] = True
    m[1, 22:86, 64:100] = True
    p.gt_masks = BitMasks(m)
    return [p]


def test_mask_rois_use_a_soft_roi_selection_of_their_own():
    heads = toy_model().roi_heads
    assert type(heads.mask_pooler).__name__ == "SoftRoISelection"
    assert heads.mask_pooler is not heads.box_pooler and heads.mask_pooler.output_size == 14
    off = toy_model("MODEL.AUGFPN.SOFT_ROI_SELECTION", "False").roi_heads
    assert type(off.mask_pooler).__name__ == "ROIPooler"


def test_auxiliary_mask_loss_is_alpha_times_the_mask_loss_of_each_raw_lateral():
    heads = toy_model().roi_heads.train()
    torch.manual_seed(1)
    features = {f"lateral{k}": torch.randn(1, 64, 96 // 2 ** k, 128 // 2 ** k) for k in (2, 3, 4, 5)}
    proposals = foreground_proposals()
    losses = heads._consistent_mask_losses(features, proposals)
    assert sorted(losses) == [f"loss_mask_lateral{k}" for k in (2, 3, 4, 5)]
    rois = torch.cat([torch.zeros(2, 1), proposals[0].proposal_boxes.tensor], dim=1)
    for k in (2, 3, 4, 5):
        # The raw lateral RoIAligned at 14 x 14, the shared auxiliary mask head, and
        # detectron2's own Mask R-CNN loss (GT-class map, 28 x 28 targets), x alpha = 0.25.
        logits = heads.cs_mask_head.layers(roi_align(features[f"lateral{k}"], rois, 14, 1 / 2 ** k, 2,
                                                     aligned=True))
        with EventStorage():
            ref = mask_rcnn_loss(logits, proposals)
        torch.testing.assert_close(losses[f"loss_mask_lateral{k}"], 0.25 * ref)
        assert ref > 0


def test_training_adds_the_auxiliary_mask_losses_and_survives_images_without_objects():
    model = toy_model().train()
    image = torch.rand(3, 96, 128) * 255
    gt = make_instances(96, 128, [[10, 12, 50, 60], [60, 20, 120, 90]], [2, 5])
    gt.gt_masks = foreground_proposals()[0].gt_masks
    empty = make_instances(96, 128, [], [])
    empty.gt_masks = BitMasks(torch.zeros(0, 96, 128, dtype=torch.bool))
    with EventStorage():
        losses = model([{"image": image, "instances": gt}, {"image": image, "instances": empty}])
        only_empty = model([{"image": image, "instances": empty}])
    assert {"loss_mask", "loss_mask_lateral2", "loss_mask_lateral5", "loss_cls_lateral2"} <= set(losses)
    assert losses["loss_mask_lateral3"] > 0 and only_empty["loss_mask_lateral3"].item() == 0
    total = sum(losses.values())
    total.backward()
    assert model.roi_heads.cs_mask_head.predictor.weight.grad.abs().sum() > 0
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
    model.eval()
    with torch.no_grad():
        out = model([{"image": image, "height": 96, "width": 128}])[0]["instances"]
    assert out.has("pred_masks")


def test_auxiliary_mask_head_init():
    """Official: ConvModule initialises its own convs (kaiming fan-out, as detectron2's), but
    the never-initialised head keeps PyTorch's default for the deconv and the mask logits;
    with CS_HEAD_INIT "detectron2" they are initialised as the main head's."""
    official = toy_model().roi_heads.cs_mask_head
    d2 = toy_model("MODEL.AUGFPN.CS_HEAD_INIT", "detectron2").roi_heads.cs_mask_head
    fan_in = official.predictor.weight[0].numel()  # 1x1 conv
    bound = 1 / fan_in ** 0.5
    assert official.predictor.weight.abs().max() <= bound
    assert abs(official.predictor.weight.std().item() * (3 * fan_in) ** 0.5 - 1) < 0.1
    assert d2.predictor.weight.std() < 0.002  # detectron2: N(0, 0.001)
    torch.testing.assert_close(official.mask_fcn1.weight.std(), d2.mask_fcn1.weight.std(), rtol=0.1, atol=0)


def test_size_of_the_coco_model():
    def size(config):
        cfg = load_config(os.path.join(PROJECT, "configs", config), ["MODEL.DEVICE", "cpu"])
        return sum(p.numel() for p in build_model(cfg).parameters())

    aug, mask = size("augfpn-mask_R-50-FPN_1x_coco.yaml"), size("mask_rcnn_R-50-FPN_1x_coco.yaml")
    rfa = 3 * (2048 * 256 + 256) + (768 * 256 + 256) + (256 * 3 * 9 + 3)
    srs = (1024 * 256 + 256) + (256 * 4 * 9 + 4)
    cs = (256 * 49 * 1024 + 1024) + (1024 * 1024 + 1024) + (1024 * 81 + 81) + (1024 * 320 + 320)
    # The auxiliary FCNMaskHead: 4 convs of 256, the deconv, 80 class maps.
    cs_mask = 4 * (256 * 256 * 9 + 256) + (256 * 256 * 4 + 256) + (256 * 80 + 80)
    assert aug - mask == rfa + 2 * srs + cs + cs_mask
