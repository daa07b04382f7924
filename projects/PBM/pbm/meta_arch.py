"""The Paired-Box Model: detectron2's two-stage detector whose outputs are pairs."""

from detectron2.modeling import META_ARCH_REGISTRY, GeneralizedRCNN
from detectron2.modeling.postprocessing import detector_postprocess


@META_ARCH_REGISTRY.register()
class PBMRCNN(GeneralizedRCNN):
    """GeneralizedRCNN (paired RPN + paired R-CNN come from the config) whose post-processing
    also rescales the visible boxes (``pred_vis_boxes``) to the original image size."""

    def inference(self, batched_inputs, detected_instances=None, do_postprocess=True):
        results = super().inference(batched_inputs, detected_instances, do_postprocess=False)
        if not do_postprocess:
            return results
        processed = []
        for r, inp in zip(results, batched_inputs):
            height, width = inp.get("height", r.image_size[0]), inp.get("width", r.image_size[1])
            if r.has("pred_vis_boxes"):
                r.pred_vis_boxes.scale(width / r.image_size[1], height / r.image_size[0])
                r.pred_vis_boxes.clip((height, width))
            processed.append({"instances": detector_postprocess(r, height, width)})
        return processed
