"""Size and speed of a detector config: parameters, FLOPs (fvcore), train-step and inference
time, all measured in the calling process so ratios between configs hold."""

import time

import torch
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.data import build_detection_test_loader
from detectron2.modeling import build_model
from detectron2.utils.events import EventStorage
from fvcore.nn import FlopCountAnalysis
from torch import nn

from common.engine import Trainer


class _TensorInOut(nn.Module):
    """Tensor in, tensors out, so fvcore can trace a detector. (detectron2's own
    ``utils.analysis`` imports ``detectron2.export``, which needs caffe2.)"""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, image):
        (out,) = self.model([{"image": image}])
        inst = out["instances"]
        return inst.pred_boxes.tensor, inst.scores


def count_parameters(model):
    return sum(p.numel() for p in model.parameters())


def _test_inputs(cfg, n):
    loader = build_detection_test_loader(cfg, cfg.DATASETS.TEST[0])
    out = []
    for batch in loader:
        out.append(batch)
        if len(out) == n:
            return out
    return out


def measure(cfg, train_iters=10, infer_images=30, warmup=3, trainer_cls=Trainer):
    """Returns a dict: params (M), gflops (one test image, fvcore), train_s_per_iter (at
    cfg.SOLVER.IMS_PER_BATCH), infer_ms_per_image (batch 1). Training batches and the
    optimizer come from ``trainer_cls`` (a project's Trainer may build its own loader).

    Inference time depends on how many boxes reach NMS, so time a trained model
    (``cfg.MODEL.WEIGHTS``): an untrained one scores thousands of near-prior boxes."""
    torch.manual_seed(0)
    model = build_model(cfg)
    if cfg.MODEL.WEIGHTS:
        DetectionCheckpointer(model).load(cfg.MODEL.WEIGHTS)
    result = {"params_M": count_parameters(model) / 1e6}

    model.eval()
    inputs = _test_inputs(cfg, warmup + infer_images)
    with torch.no_grad():
        flops = FlopCountAnalysis(_TensorInOut(model), (inputs[0][0]["image"],))
        flops.unsupported_ops_warnings(False).uncalled_modules_warnings(False)
        result["gflops"] = flops.total() / 1e9
        for batch in inputs[:warmup]:
            model(batch)
        start = time.perf_counter()
        for batch in inputs[warmup:]:
            model(batch)
        result["infer_ms_per_image"] = 1e3 * (time.perf_counter() - start) / len(inputs[warmup:])

    model.train()
    optimizer = trainer_cls.build_optimizer(cfg, model)
    loader = iter(trainer_cls.build_train_loader(cfg))
    batches = [next(loader) for _ in range(warmup + train_iters)]
    with EventStorage():
        times = []
        for i, batch in enumerate(batches):
            start = time.perf_counter()
            loss = sum(model(batch).values())
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            if i >= warmup:
                times.append(time.perf_counter() - start)
    result["train_s_per_iter"] = sum(times) / len(times)
    return result
