"""Training engine shared by every train_net.py: parser, setup, Trainer, launch."""

from .defaults import (
    Trainer,
    add_common_config,
    add_dataset_arguments,
    default_argument_parser,
    evaluate,
    load_fitting_checkpoint,
    set_num_classes,
    setup,
)
from .launch import launch

__all__ = [
    "Trainer", "add_common_config", "add_dataset_arguments", "default_argument_parser", "evaluate", "launch",
    "load_fitting_checkpoint", "set_num_classes", "setup",
]
