"""Evaluation: crowd metrics (AP, MR^-2, recall, JI) as the CrowdHuman toolkit computes them.
COCO box AP is detectron2's COCOEvaluator (pycocotools)."""

from .crowd import CrowdHumanEvaluator, evaluate_crowd

__all__ = ["CrowdHumanEvaluator", "evaluate_crowd"]
