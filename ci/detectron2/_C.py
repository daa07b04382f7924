"""Stand-in for detectron2's compiled extension ``detectron2._C``.

This install of detectron2 v0.6 has its Python sources only (no C++/CUDA build), so
``import detectron2.layers`` and everything built on it works, but none of the compiled
ops does. Calling one raises an error that names the op and what to use instead.
The same install serves GPU machines: torchvision's CUDA ops replace nms, roi_align and
deform_conv2d; no project uses the rotated-box ops, which only a source build provides.
"""

_USE_INSTEAD = {
    "deform_conv_forward": "torchvision.ops.deform_conv2d",
    "deform_conv_backward_input": "torchvision.ops.deform_conv2d",
    "deform_conv_backward_filter": "torchvision.ops.deform_conv2d",
    "modulated_deform_conv_forward": "torchvision.ops.deform_conv2d (with mask=)",
    "modulated_deform_conv_backward": "torchvision.ops.deform_conv2d (with mask=)",
    "roi_align_forward": "torchvision.ops.roi_align",
    "roi_align_backward": "torchvision.ops.roi_align",
    "nms": "torchvision.ops.nms / batched_nms",
    "COCOevalEvaluateImages": "COCOEvaluator(..., use_fast_impl=False) (pycocotools)",
    "COCOevalAccumulate": "COCOEvaluator(..., use_fast_impl=False) (pycocotools)",
    "InstanceAnnotation": "COCOEvaluator(..., use_fast_impl=False) (pycocotools)",
}

NOT_BUILT = "not built (Python-only detectron2 install; torchvision provides the ops the projects use)"


def get_compiler_version():
    return NOT_BUILT


def get_cuda_version():
    return NOT_BUILT


def has_cuda():
    return False


class CompiledOpUnavailable(RuntimeError):
    pass


def __getattr__(name):
    if name.startswith("__"):
        raise AttributeError(name)

    def unavailable(*args, **kwargs):
        hint = _USE_INSTEAD.get(name)
        instead = f"use {hint} instead, or " if hint else ""
        raise CompiledOpUnavailable(
            f"detectron2._C.{name} is a compiled op, and this detectron2 was installed without "
            f"its C++/CUDA extension: {instead}build detectron2 from source, with "
            "ci/detectron2/v0.6-compat.patch applied for today's numpy/Pillow, outside make install "
            "(https://detectron2.readthedocs.io/tutorials/install.html)."
        )

    unavailable.__name__ = name
    return unavailable
