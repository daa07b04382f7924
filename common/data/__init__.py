"""Data: toy datasets (registered on import), custom COCO / CrowdHuman registration."""

from .datasets import (
    DatasetError,
    load_crowdhuman_odgt,
    prepare,
    register_coco,
    register_crowdhuman,
    register_toy_datasets,
)

register_toy_datasets()

__all__ = [
    "DatasetError",
    "load_crowdhuman_odgt",
    "prepare",
    "register_coco",
    "register_crowdhuman",
    "register_toy_datasets",
]
