"""The shared parts of every ``train_net.py``: argument parser, ``setup()`` and ``Trainer``.

Each project's script stays in detectron2's shape (setup -> Trainer -> main -> launch) and only
adds its own ``add_<x>_config``.
"""

import logging
import os
import weakref

import torch
import yaml
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.config import CfgNode, get_cfg
from detectron2.data import DatasetMapper, MetadataCatalog, build_detection_train_loader
from detectron2.engine import DefaultTrainer, HookBase, SimpleTrainer, TrainerBase, default_setup
from detectron2.engine import default_argument_parser as _d2_parser
from detectron2.engine.train_loop import AMPTrainer
from detectron2.evaluation import COCOEvaluator
from detectron2.solver.build import (
    _generate_optimizer_class_with_gradient_clipping,
    get_default_optimizer_params,
    maybe_add_gradient_clipping,
)
from detectron2.utils import comm
from detectron2.utils.file_io import Detectron2Handler, PathManager
from detectron2.utils.logger import setup_logger
from torch.nn.parallel import DistributedDataParallel

from common.data import DatasetError, prepare, register_coco, register_crowdhuman
from common.evaluation import CrowdHumanEvaluator
from common.modeling import add_fcos_config

__all__ = [
    "add_common_config", "default_argument_parser", "evaluate", "set_num_classes", "setup", "Trainer",
]


# detectron2's per-parameter clipping, and the whole model's gradient norm (Trainer.build_optimizer).
CLIP_TYPES = ("value", "norm", "full_model")


def add_common_config(cfg):
    """Keys of the shared engine and baselines (not of any paper)."""
    add_fcos_config(cfg)
    # "SGD" (detectron2's default) or "ADAMW" (used by the from-scratch toy configs).
    cfg.SOLVER.OPTIMIZER = "SGD"
    # An image file that cannot be read stops training with its name (False), or is skipped
    # with a warning, listed in OUTPUT_DIR/skipped_images.txt and counted at the end (True).
    cfg.DATALOADER.SKIP_BAD_IMAGES = False


def default_argument_parser(epilog=None):
    """detectron2's parser plus command-line dataset registration."""
    return add_dataset_arguments(_d2_parser(epilog))


def add_dataset_arguments(parser):
    """``--register-coco`` and ``--register-crowdhuman`` (repeatable), which ``setup()`` reads."""
    parser.add_argument(
        "--register-coco", nargs=3, action="append", default=[],
        metavar=("NAME", "JSON", "IMAGE_DIR"),
        help="register a COCO-format json + image folder as dataset NAME (repeatable)",
    )
    parser.add_argument(
        "--register-crowdhuman", nargs=3, action="append", default=[],
        metavar=("NAME", "ODGT", "IMAGE_DIR"),
        help="register a CrowdHuman-style .odgt + image folder as dataset NAME (repeatable)",
    )
    return parser


def _fail(msg):
    """A one-line error for bad user input, instead of a traceback from deep inside."""
    raise SystemExit(f"error: {msg}")


def _merge(cfg, args):
    steps = [(args.config_file, cfg.merge_from_file, args.config_file)] if args.config_file else []
    steps.append(("the command line", cfg.merge_from_list, args.opts))
    for where, merge, arg in steps:
        try:
            merge(arg)
        except (KeyError, ValueError, AssertionError, TypeError) as e:
            msg = str(e.args[0] if e.args else e)
            if "Non-existent" in msg:  # yacs: KeyError from a file, AssertionError from opts
                _fail(f"unknown config key {msg.split(':')[-1].strip()} (in {where})")
            _fail(f"bad config (in {where}): {msg}")


def set_num_classes(cfg, opts=(), dataset=None):
    """The class-count rule, the same in ``setup()`` and in the tests' configs: every head's
    NUM_CLASSES follows the ``thing_classes`` of the dataset in use (``dataset``; default the
    training set, ``DATASETS.TRAIN[0]``), replacing a config file's value, except a
    ``MODEL.<HEAD>.NUM_CLASSES`` given on the command line (``opts``), which wins. Returns that
    dataset's class count (None if unknown)."""
    dataset = dataset or (cfg.DATASETS.TRAIN[0] if cfg.DATASETS.TRAIN else None)
    if dataset is None:
        return None
    meta = MetadataCatalog.get(dataset)
    if "thing_classes" not in meta.as_dict():
        return None
    n = len(meta.thing_classes)
    given = set(list(opts)[0::2])
    for name, node in _class_heads(cfg):
        if f"MODEL.{name}.NUM_CLASSES" not in given:
            node.NUM_CLASSES = n
    return n


def _class_heads(cfg):
    """``(name, node)`` of every ``MODEL.<HEAD>`` with a NUM_CLASSES of detected things."""
    return [(name, node) for name, node in cfg.MODEL.items()
            if isinstance(node, CfgNode) and "NUM_CLASSES" in node and name != "SEM_SEG_HEAD"]


def setup(args, *add_config_fns):
    """Builds the frozen config from ``args`` and sets up logging and the output folder.

    ``add_config_fns`` add a project's keys (e.g. ``add_gfl_config``) before the file is merged.
    """
    try:
        for name, json_file, image_dir in args.register_coco:
            register_coco(name, json_file, image_dir)
        for name, odgt, image_dir in args.register_crowdhuman:
            register_crowdhuman(name, odgt, image_dir)
    except DatasetError as e:
        _fail(e)

    cfg = get_cfg()
    add_common_config(cfg)
    for fn in add_config_fns:
        fn(cfg)
    _merge(cfg, args)

    if cfg.SOLVER.OPTIMIZER.upper() not in ("SGD", "ADAMW"):
        _fail(f"SOLVER.OPTIMIZER must be SGD or ADAMW, not {cfg.SOLVER.OPTIMIZER}")
    if cfg.SOLVER.CLIP_GRADIENTS.CLIP_TYPE not in CLIP_TYPES:
        _fail(f"SOLVER.CLIP_GRADIENTS.CLIP_TYPE must be one of {', '.join(CLIP_TYPES)}, "
              f"not {cfg.SOLVER.CLIP_GRADIENTS.CLIP_TYPE}")
    if not args.eval_only and not cfg.DATASETS.TRAIN:
        _fail("DATASETS.TRAIN is empty: nothing to train on (give --config-file configs/<config>.yaml; "
              "--help lists the options)")
    if args.eval_only and not cfg.DATASETS.TEST:
        _fail("DATASETS.TEST is empty: nothing to evaluate on")
    if cfg.MODEL.DEVICE.startswith("cuda") and not torch.cuda.is_available():
        cfg.MODEL.DEVICE = "cpu"
    if cfg.OUTPUT_DIR == "./output" and args.config_file:
        # An experiment's identity is its config name.
        cfg.OUTPUT_DIR = os.path.join("output", os.path.splitext(os.path.basename(args.config_file))[0])
    # One process per machine generates the toy data, the others then only check. A process
    # that fails still reaches the barrier, so the others do not wait for it until the timeout.
    # --eval-only reads only the test sets (the training set need not be registered).
    datasets = ([] if args.eval_only else list(cfg.DATASETS.TRAIN)) + list(cfg.DATASETS.TEST)
    error = None
    for rank_turn in (True, False):
        if rank_turn == (comm.get_local_rank() == 0):
            try:
                for name in datasets:
                    prepare(name)
            except DatasetError as e:
                error = e
        comm.synchronize()
    if error is not None:
        _fail(error)
    # The dataset in use decides: the training set, or for --eval-only (and the demo) the
    # first test set; a checkpoint made for another count stops evaluate() in one line.
    n = set_num_classes(cfg, args.opts, cfg.DATASETS.TEST[0] if args.eval_only else None)
    if n is not None and not args.eval_only:
        for name, node in _class_heads(cfg):
            if node.NUM_CLASSES != n:
                _fail(f"MODEL.{name}.NUM_CLASSES is {node.NUM_CLASSES} on the command line, but the "
                      f"training set {cfg.DATASETS.TRAIN[0]} has {n} classes")
    _check_weights(cfg, args)
    if args.eval_only:
        # --eval-only and the demo write beside the run whose checkpoint they read, not over its
        # config.yaml, log and results (--resume reads that run's last checkpoint).
        cfg.OUTPUT_DIR = os.path.join(cfg.OUTPUT_DIR, getattr(args, "output_subdir", "eval_only"))
    else:
        _check_output_dir(cfg)
    cfg.freeze()
    default_setup(cfg, args)
    return cfg


def _first_difference(old, new, prefix):
    if isinstance(old, dict) and isinstance(new, dict):
        for key in sorted(set(old) | set(new)):
            found = _first_difference(old.get(key), new.get(key), f"{prefix}.{key}")
            if found:
                return found
        return None
    return None if old == new else f"{prefix} is {old} there, {new} here"


def _check_output_dir(cfg):
    """A training folder holds one experiment: one whose saved config.yaml trains another model
    or on other data (e.g. the same config file with a dataset of one's own, then the toy data)
    is refused, with or without --resume, instead of being overwritten or resumed with the
    wrong optimizer state. The schedule and the weights to start from may change."""
    saved = os.path.join(cfg.OUTPUT_DIR, "config.yaml")
    if not os.path.isfile(saved):
        return
    try:
        with open(saved) as f:
            old = yaml.safe_load(f)
        old = {"MODEL": old["MODEL"], "DATASETS": {"TRAIN": old["DATASETS"]["TRAIN"]}}
    except (OSError, yaml.YAMLError, KeyError, TypeError):
        return  # not a config this engine wrote
    new = yaml.safe_load(cfg.dump())
    new = {"MODEL": new["MODEL"], "DATASETS": {"TRAIN": new["DATASETS"]["TRAIN"]}}
    for node in (old["MODEL"], new["MODEL"]):
        for key in ("WEIGHTS", "DEVICE"):
            node.pop(key, None)
    difference = _first_difference(old, new, "")
    if difference:
        _fail(f"{cfg.OUTPUT_DIR} holds another experiment ({difference.lstrip('.')}, in its config.yaml): "
              "set OUTPUT_DIR to a folder of its own")


def _check_weights(cfg, args):
    """The checkpoint to start from exists; a URL (``detectron2://ImageNetPretrained/...``) is
    downloaded into the cache now (once; iopath locks the file), so that a node without
    internet access fails here in one line, not in the checkpointer."""
    weights = cfg.MODEL.WEIGHTS
    resuming = args.resume and os.path.exists(os.path.join(cfg.OUTPUT_DIR, "last_checkpoint"))
    if resuming:
        return
    if not weights:
        if args.eval_only:  # would evaluate a randomly initialised model
            _fail("MODEL.WEIGHTS is empty: evaluating needs a trained checkpoint "
                  "(MODEL.WEIGHTS output/<run>/model_final.pth)")
        return
    if "://" not in weights:
        if not os.path.isfile(weights):
            _fail(f"MODEL.WEIGHTS checkpoint not found: {weights}")
        return
    try:
        PathManager.get_local_path(weights)
    except OSError as e:  # URLError, HTTPError and socket errors are OSErrors
        url = weights.replace(Detectron2Handler.PREFIX, Detectron2Handler.S3_DETECTRON2_PREFIX)
        _fail(f"MODEL.WEIGHTS {weights} could not be downloaded ({e}); without internet access, "
              f"download {url} on another machine and set MODEL.WEIGHTS to that file")


def _skipped_images_file(cfg):
    return os.path.join(cfg.OUTPUT_DIR, "skipped_images.txt")


class ImageCheckingMapper:
    """A dataset mapper whose image files may be unreadable (corrupt, truncated, gone): such an
    image stops training with its name, or with ``skip`` is skipped (detectron2's MapDataset
    then samples another one) with a warning, and listed in ``record``."""

    def __init__(self, mapper, skip, record):
        self.mapper, self.skip, self.record = mapper, skip, record

    def __call__(self, dataset_dict):
        try:
            return self.mapper(dataset_dict)
        except OSError as e:  # PIL's UnidentifiedImageError, truncated files, missing files
            name = dataset_dict.get("file_name", "?")
            if not self.skip:
                raise DatasetError(f"unreadable image {name} ({e}); DATALOADER.SKIP_BAD_IMAGES True "
                                   "skips such images") from e
            logging.getLogger(__name__).warning(f"skipped unreadable image {name} ({e})")
            with open(self.record, "a") as f:
                f.write(name + "\n")
            return None


class _CountSkippedImages(HookBase):
    def __init__(self, record):
        self.record = record

    def after_train(self):
        if os.path.isfile(self.record):
            with open(self.record) as f:
                names = set(f.read().split())
            logging.getLogger(__name__).warning(
                f"training skipped {len(names)} unreadable images (listed in {self.record})")


class Trainer(DefaultTrainer):
    """detectron2's DefaultTrainer with COCO evaluation through pycocotools (crowd metrics for
    CrowdHuman-style datasets), an AdamW option, whole-model gradient-norm clipping,
    DistributedDataParallel that also works for CPU (gloo) processes, and the optimizer state
    in its checkpoints."""

    def __init__(self, cfg):
        # DefaultTrainer.__init__ with one change: DDP gets device_ids only on GPUs.
        TrainerBase.__init__(self)
        if not logging.getLogger("detectron2").isEnabledFor(logging.INFO):
            setup_logger()
        cfg = DefaultTrainer.auto_scale_workers(cfg, comm.get_world_size())
        model = self.build_model(cfg)
        optimizer = self.build_optimizer(cfg, model)
        data_loader = self.build_train_loader(cfg)
        if comm.get_world_size() > 1:
            on_gpu = next(model.parameters()).is_cuda
            model = DistributedDataParallel(
                model,
                device_ids=[comm.get_local_rank()] if on_gpu else None,
                broadcast_buffers=False,
            )
        trainer_cls = AMPTrainer if cfg.SOLVER.AMP.ENABLED else SimpleTrainer
        self._trainer = trainer_cls(model, data_loader, optimizer)
        self.scheduler = self.build_lr_scheduler(cfg, optimizer)
        self.checkpointer = DetectionCheckpointer(
            model, cfg.OUTPUT_DIR, trainer=weakref.proxy(self)
        )
        self.start_iter = 0
        self.max_iter = cfg.SOLVER.MAX_ITER
        self.cfg = cfg
        self.register_hooks(self.build_hooks())

    # v0.6's DefaultTrainer checkpoints neither the optimizer nor the AMP grad scaler, so
    # --resume restarted momentum/Adam moments from zero (fixed upstream after v0.6).
    def state_dict(self):
        ret = super().state_dict()
        ret["_trainer"] = self._trainer.state_dict()
        return ret

    def load_state_dict(self, state_dict):
        super().load_state_dict(state_dict)
        self._trainer.load_state_dict(state_dict["_trainer"])

    @classmethod
    def build_train_loader(cls, cfg, mapper=None):
        """detectron2's loader with ``mapper`` (default: DatasetMapper), whose unreadable images
        stop training with their name or are skipped (``DATALOADER.SKIP_BAD_IMAGES``)."""
        mapper = ImageCheckingMapper(mapper or DatasetMapper(cfg, is_train=True),
                                     cfg.DATALOADER.SKIP_BAD_IMAGES, _skipped_images_file(cfg))
        return build_detection_train_loader(cfg, mapper=mapper)

    def build_hooks(self):
        return super().build_hooks() + [_CountSkippedImages(_skipped_images_file(self.cfg))]

    @classmethod
    def build_evaluator(cls, cfg, dataset_name, output_folder=None):
        output_folder = output_folder or os.path.join(cfg.OUTPUT_DIR, "inference")
        evaluator_type = MetadataCatalog.get(dataset_name).get("evaluator_type", "coco")
        if evaluator_type == "crowdhuman":
            return CrowdHumanEvaluator(dataset_name, output_dir=output_folder)
        if evaluator_type != "coco":
            raise NotImplementedError(f"no evaluator for type {evaluator_type}")
        # use_fast_impl=False: pycocotools, not detectron2's compiled COCOeval.
        return COCOEvaluator(dataset_name, output_dir=output_folder, use_fast_impl=False)

    @classmethod
    def optimizer_params(cls, cfg, model):
        """detectron2's parameter groups (lr and weight decay per parameter from the SOLVER
        keys); a project whose official optimizer groups them otherwise overrides this."""
        return get_default_optimizer_params(
            model,
            base_lr=cfg.SOLVER.BASE_LR,
            weight_decay_norm=cfg.SOLVER.WEIGHT_DECAY_NORM,
            bias_lr_factor=cfg.SOLVER.BIAS_LR_FACTOR,
            weight_decay_bias=cfg.SOLVER.WEIGHT_DECAY_BIAS,
        )

    @classmethod
    def build_optimizer(cls, cfg, model):
        """detectron2's parameter groups with SGD (its default) or AdamW, and gradient clipping:
        detectron2's per-parameter "value" / "norm", or "full_model": the norm of all gradients
        together, as ``torch.nn.utils.clip_grad_norm_`` over every parameter, the way
        mmdetection's ``grad_clip=dict(max_norm=35, norm_type=2)`` clips."""
        params = cls.optimizer_params(cfg, model)
        optimizer, kwargs = torch.optim.AdamW, {}
        if cfg.SOLVER.OPTIMIZER.upper() == "SGD":
            optimizer = torch.optim.SGD
            kwargs = {"momentum": cfg.SOLVER.MOMENTUM, "nesterov": cfg.SOLVER.NESTEROV}
        clip = cfg.SOLVER.CLIP_GRADIENTS
        if clip.ENABLED and clip.CLIP_TYPE == "full_model":
            max_norm, norm_type = clip.CLIP_VALUE, clip.NORM_TYPE
            optimizer = _generate_optimizer_class_with_gradient_clipping(
                optimizer,
                global_clipper=lambda p: torch.nn.utils.clip_grad_norm_(p, max_norm, norm_type),
            )
        else:
            optimizer = maybe_add_gradient_clipping(cfg, optimizer)
        return optimizer(params, lr=cfg.SOLVER.BASE_LR, weight_decay=cfg.SOLVER.WEIGHT_DECAY, **kwargs)


def evaluate(trainer_cls, cfg, args):
    """``--eval-only``: loads ``MODEL.WEIGHTS`` (or the run's last checkpoint with ``--resume``)."""
    model = trainer_cls.build_model(cfg)
    # setup() put this evaluation's output into a subfolder of the run (OUTPUT_DIR/eval_only).
    checkpointer = DetectionCheckpointer(model, save_dir=os.path.dirname(cfg.OUTPUT_DIR))
    path = checkpointer.get_checkpoint_file() if args.resume and checkpointer.has_checkpoint() \
        else cfg.MODEL.WEIGHTS
    load_fitting_checkpoint(model, path)
    return trainer_cls.test(cfg, model)


def load_fitting_checkpoint(model, path):
    """Loads ``path`` into ``model`` for evaluation; a parameter whose shape differs (a model
    built for another number of classes than the checkpoint) is a one-line error, where
    detectron2 would skip it with a warning and evaluate a half-loaded model."""
    checkpointer = DetectionCheckpointer(model)
    local = checkpointer.path_manager.get_local_path(path)
    incompatible = checkpointer._load_model(checkpointer._load_file(local))
    if incompatible is not None and incompatible.incorrect_shapes:
        key, have, want = incompatible.incorrect_shapes[0]
        _fail(f"checkpoint {path} does not fit this model: {key} is {tuple(have)} there, "
              f"{tuple(want)} here ({len(incompatible.incorrect_shapes)} such parameters; trained for "
              f"another number of classes? the first test set decides it, or MODEL.<HEAD>.NUM_CLASSES)")
    if incompatible is not None:
        checkpointer._log_incompatible_keys(incompatible)
