"""Runs shipped configs the way their users run them, on stand-in data, for a few iterations.

For each config: ``cd projects/<P> && python train_net.py --config-file configs/<c>.yaml`` (the
baselines: ``python -m common.train_net``) trains and evaluates at the end. Then ``--eval-only``
evaluates the checkpoint it wrote and must give the same detections, for the first config of
each distinct model (project, meta-architecture, RoI heads, backbone builder, masks: the code
a checkpoint round trip depends on; a project's config of a model made only of detectron2's
classes counts as detectron2's; ``--reload-all`` for every config): one process start less
for the others keeps ``make test`` in its time budget. The datasets come the way the READMEs
tell users to provide them: detectron2's builtin ``coco_2017_*`` from
``$DETECTRON2_DATASETS/coco``, CrowdHuman by ``--register-crowdhuman crowdhuman_{train,val}
annotation_{train,val}.odgt Images``, the toy datasets generated on first use. COCO and
CrowdHuman are replaced by the small trees of ``common.data.stand_in`` (the real formats and
category ids, random content).

Only the cost is reduced (``small_run_opts``): 2 iterations at batch 2, data loading in the
main process, no pretrained weights
(``MODEL.WEIGHTS ""``: nothing can be downloaded here; a config that names ImageNet weights then
runs at learning rate 0, see below), a 128 px shorter side (the toy images' size), at most
64 sampled RoIs per image, 100 test proposals and 20 detections per image (the per-detection
heads: D2Det's dense regression, masks), and every score threshold at -1, so that what an
untrained model detects goes through the whole evaluation. (Without its ImageNet weights a
FrozenBN R-50 saturates the R-CNN softmax: most class scores are exactly 0; D2Det's soft-NMS
drops those, so its COCO configs evaluate no detections.) The toy configs are evaluated on the
first 4 images of their validation set, registered with ``--register-coco`` /
``--register-crowdhuman``.

    python -m harness.config_check                    # every config, on the CPU
    python -m harness.config_check --device cuda      # on a GPU (make gpu-check)
    python -m harness.config_check projects/GFL/configs/gfl_R-50-FPN_1x_coco.yaml
"""

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from detectron2.config import CfgNode

from common.projects import REPO, config_files, project_of
from harness.projects import load_config

__all__ = ["ConfigRun", "StandInData", "run_config", "run_configs", "small_run_opts", "user_command"]

ITERATIONS, BATCH, SHORT_SIDE, LONG_SIDE = 2, 2, 128, 192
ROIS_PER_IMAGE, TEST_PROPOSALS, DETECTIONS, TOY_EVAL_IMAGES = 64, 100, 20, 4


class StandInData:
    """The datasets the shipped configs name, provided under ``root`` as a user provides the
    real ones. ``provide(name)`` returns ``(env, args, name)``: environment variables, command
    line arguments (registrations) and the dataset name to use in the config."""

    def __init__(self, root):
        from common.data.stand_in import write_coco_tree, write_crowdhuman_tree

        self.root = root
        self._lock = threading.Lock()
        if not os.path.isdir(os.path.join(root, "coco")):
            write_coco_tree(root)
        self.crowdhuman = os.path.join(root, "crowdhuman")
        if not os.path.isdir(self.crowdhuman):
            write_crowdhuman_tree(root)

    def provide(self, name):
        if name.startswith("coco_2017_"):
            return {"DETECTRON2_DATASETS": self.root}, [], name
        if name in ("crowdhuman_train", "crowdhuman_val"):
            split = name.split("_")[1]
            odgt = os.path.join(self.crowdhuman, f"annotation_{split}.odgt")
            return {}, ["--register-crowdhuman", name, odgt, os.path.join(self.crowdhuman, "Images")], name
        if name in ("toy_shapes_train", "toy_crowd_train"):
            return {}, [], name
        if name in ("toy_shapes_val", "toy_crowd_val"):
            return self._toy_val_subset(name)
        raise ValueError(f"no stand-in for dataset '{name}': add one to harness/config_check.py")

    def _toy_val_subset(self, name):
        """The first images of a toy val set, as a file of its own, written once: the runs of
        other configs (other threads, their processes) read it meanwhile."""
        from common.data import toy

        dataset = name.rsplit("_", 1)[0]
        subset = f"{name}_first{TOY_EVAL_IMAGES}"
        coco = dataset == "toy_shapes"
        path = os.path.join(self.root, subset + (".json" if coco else ".odgt"))
        with self._lock:
            folder = toy.generate(dataset, "val")
            if not os.path.exists(path):
                if coco:
                    with open(os.path.join(folder, "annotations.json")) as f:
                        data = json.load(f)
                    data["images"] = data["images"][:TOY_EVAL_IMAGES]
                    kept = {im["id"] for im in data["images"]}
                    data["annotations"] = [a for a in data["annotations"] if a["image_id"] in kept]
                    text = json.dumps(data)
                else:
                    with open(os.path.join(folder, "annotations.odgt")) as f:
                        text = "".join(f.readlines()[:TOY_EVAL_IMAGES])
                with open(path + ".tmp", "w") as f:
                    f.write(text)
                os.replace(path + ".tmp", path)
        register = "--register-coco" if coco else "--register-crowdhuman"
        return {}, [register, subset, path, os.path.join(folder, "images")], subset


def small_run_opts(cfg, device):
    """Overrides that make a config's run cheap without changing what runs."""
    opts = ["MODEL.DEVICE", device, "MODEL.WEIGHTS", "", "SOLVER.IMS_PER_BATCH", str(BATCH),
            "SOLVER.MAX_ITER", str(ITERATIONS), "DATALOADER.NUM_WORKERS", "0"]
    if cfg.INPUT.MIN_SIZE_TEST > SHORT_SIDE:
        ranged = cfg.INPUT.MIN_SIZE_TRAIN_SAMPLING == "range"
        train = (SHORT_SIDE - 32, SHORT_SIDE) if ranged else (SHORT_SIDE,)
        opts += ["INPUT.MIN_SIZE_TRAIN", str(train), "INPUT.MAX_SIZE_TRAIN", str(LONG_SIDE),
                 "INPUT.MIN_SIZE_TEST", str(SHORT_SIDE), "INPUT.MAX_SIZE_TEST", str(LONG_SIDE)]
    if cfg.MODEL.WEIGHTS:
        # Its learning rate is meant for ImageNet weights. Without them a FrozenBN ResNet has
        # no normalisation at all and its activations grow with depth (R-101's res4 reaches
        # ~6e6 on a random image), so a head without norms (AP-Loss R-101) diverges in its
        # first SGD step. At lr 0 every step still runs (forward, backward, the optimizer, the
        # checkpoints); from-scratch toy configs keep theirs.
        opts += ["SOLVER.BASE_LR", "0.0"]
    if cfg.MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE > ROIS_PER_IMAGE:
        opts += ["MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE", str(ROIS_PER_IMAGE)]
    if cfg.MODEL.RPN.POST_NMS_TOPK_TEST > TEST_PROPOSALS:
        opts += ["MODEL.RPN.POST_NMS_TOPK_TEST", str(TEST_PROPOSALS)]
    if cfg.TEST.DETECTIONS_PER_IMAGE > DETECTIONS:
        opts += ["TEST.DETECTIONS_PER_IMAGE", str(DETECTIONS)]
    for name, node in cfg.MODEL.items():
        if isinstance(node, CfgNode) and "SCORE_THRESH_TEST" in node:
            opts += [f"MODEL.{name}.SCORE_THRESH_TEST", "-1.0"]
        if isinstance(node, CfgNode) and node.get("PRE_REFINE_TOPK_TEST", 0) > DETECTIONS:
            opts += [f"MODEL.{name}.PRE_REFINE_TOPK_TEST", str(DETECTIONS)]  # D2Det's refined boxes
    return opts


def user_command(config, *args):
    """The command and folder a user runs ``config`` from: its project's ``train_net.py`` in
    the project folder, or ``python -m common.train_net`` at the repo root."""
    project = project_of(config)
    cwd = REPO if project is None else os.path.join(REPO, "projects", project)
    entry = ["-m", "common.train_net"] if project is None else ["train_net.py"]
    return [sys.executable, *entry, "--config-file", os.path.relpath(config, cwd), *args], cwd


@dataclass
class ConfigRun:
    """What one config's run left: the two processes, its output folder, the problems found."""

    config: str
    out_dir: str
    train: subprocess.CompletedProcess
    evaluation: subprocess.CompletedProcess | None
    seconds: tuple
    problems: list = field(default_factory=list)

    @property
    def ok(self):
        return not self.problems


def _tail(proc, lines=15):
    return "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-lines:])


def _detections(folder):
    """The detections an evaluator wrote (COCO results json or crowd .odgt), parsed."""
    found = {}
    for name in ("coco_instances_results.json", "crowd_detections.odgt"):
        path = os.path.join(folder, "inference", name)
        if os.path.isfile(path):
            with open(path) as f:
                found[name] = json.load(f) if name.endswith(".json") else [json.loads(x) for x in f]
    return found


def _close(a, b, tol=1e-3):
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_close(a[k], b[k], tol) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_close(x, y, tol) for x, y in zip(a, b))
    if isinstance(a, float) or isinstance(b, float):
        return math.isclose(a, b, rel_tol=tol, abs_tol=tol)
    return a == b


def _check(run):
    """The problems of a finished run, as sentences."""
    p = run.problems
    if run.train.returncode != 0:
        p.append(f"training exited with {run.train.returncode}:\n{_tail(run.train)}")
        return
    metrics_file = os.path.join(run.out_dir, "metrics.json")
    metrics = [json.loads(x) for x in open(metrics_file)] if os.path.isfile(metrics_file) else []
    losses = [m["total_loss"] for m in metrics if "total_loss" in m]
    if not losses or not all(math.isfinite(v) for v in losses):
        p.append(f"training losses missing or not finite: {losses}")
    if not any(k.endswith("/AP") for m in metrics for k in m):
        p.append("no evaluation result (…/AP) in metrics.json")
    if not os.path.isfile(os.path.join(run.out_dir, "model_final.pth")):
        p.append("no model_final.pth")
    if not any(f.startswith("events.out.tfevents") for f in os.listdir(run.out_dir)):
        p.append("no TensorBoard event file")
    trained = _detections(run.out_dir)
    if not trained:
        p.append("the final evaluation wrote no detections file")
    if run.evaluation is None:
        return
    log = run.evaluation.stdout + run.evaluation.stderr
    if run.evaluation.returncode != 0:
        p.append(f"--eval-only exited with {run.evaluation.returncode}:\n{_tail(run.evaluation)}")
    elif "not found in the checkpoint" in log or "not used by the model" in log:
        p.append("--eval-only: the checkpoint and the model do not match (missing / unexpected keys)")
    elif _detections(os.path.join(run.out_dir, "eval_only")).keys() != trained.keys() or not _close(
        _detections(os.path.join(run.out_dir, "eval_only")), trained
    ):
        p.append("--eval-only from model_final.pth gave other detections than the final evaluation")


def model_key(cfg, config):
    """What a checkpoint round trip of ``config`` depends on: its project and model classes.
    A model built only of detectron2's own classes (a project's FPN baseline) is detectron2's,
    whichever project ships the config."""
    from detectron2.modeling import BACKBONE_REGISTRY, META_ARCH_REGISTRY, ROI_HEADS_REGISTRY

    m = cfg.MODEL
    heads = m.ROI_HEADS.NAME if m.META_ARCHITECTURE == "GeneralizedRCNN" else ""
    parts = [(META_ARCH_REGISTRY, m.META_ARCHITECTURE), (BACKBONE_REGISTRY, m.BACKBONE.NAME)]
    parts += [(ROI_HEADS_REGISTRY, heads)] if heads else []
    own = all(registry.get(name).__module__.startswith("detectron2.") for registry, name in parts)
    return None if own else project_of(config), m.META_ARCHITECTURE, heads, m.BACKBONE.NAME, m.MASK_ON


def run_config(config, data, out_dir, device="cpu", launch_args=(), opts=(), threads=None, timeout=900,
               reload=True):
    """Trains ``config`` for a few iterations as a user runs it (``launch_args`` such as
    ``--num-gpus 2``, ``opts`` appended after the small-run overrides), evaluates, then (if
    ``reload``) ``--eval-only`` from its checkpoint. Returns a ``ConfigRun`` whose ``problems``
    say what failed."""
    cfg = load_config(config)
    small = small_run_opts(cfg, device)
    env = dict(os.environ)
    if threads:
        env.update(OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))

    def datasets(names):
        args, used = [], []
        for name in names:
            extra_env, extra_args, used_name = data.provide(name)
            env.update(extra_env)
            args += extra_args
            used.append(used_name)
        return args, used

    train_args, train_sets = datasets(cfg.DATASETS.TRAIN)
    test_args, test_sets = datasets(cfg.DATASETS.TEST)
    test_opt = ["DATASETS.TEST", str(tuple(test_sets))]

    def run(*args):
        argv, cwd = user_command(config, *launch_args, *args)
        start = time.time()
        proc = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
        return proc, time.time() - start

    train, t_train = run(*train_args, *test_args, *small, *test_opt, *opts, "OUTPUT_DIR", out_dir)
    evaluation, t_eval = None, 0.0
    if train.returncode == 0 and reload:
        evaluation, t_eval = run(
            "--eval-only", *test_args, *small, *test_opt, *opts,
            "MODEL.WEIGHTS", os.path.join(out_dir, "model_final.pth"),
            "OUTPUT_DIR", out_dir,  # its output goes to out_dir/eval_only
        )
    result = ConfigRun(config, out_dir, train, evaluation, (t_train, t_eval))
    _check(result)
    return result


def _out_dir(out_root, config):
    stem = os.path.splitext(os.path.basename(config))[0]
    return os.path.join(out_root, project_of(config) or "common", stem)


def run_configs(configs, data_root, out_root, device="cpu", workers=1, reload_all=False):
    """``run_config`` for each config, ``workers`` at a time (each with its share of the CPU
    cores, so that they do not oversubscribe them), the ``--eval-only`` reload for the first
    config of each ``model_key`` (every config with ``reload_all``). Returns the runs in order."""
    data = StandInData(data_root)
    threads = max(1, (os.cpu_count() or 1) // workers) if workers > 1 else None
    seen, reload = set(), []
    for c in configs:
        key = model_key(load_config(c), c)
        reload.append(reload_all or key not in seen)
        seen.add(key)
    with ThreadPoolExecutor(workers) as pool:
        return list(pool.map(
            lambda c, r: run_config(c, data, _out_dir(out_root, c), device=device, threads=threads, reload=r),
            configs, reload,
        ))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("configs", nargs="*", help="config files (default: every shipped config)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--workers", type=int, default=None,
                        help="configs run at once (default: 2 on a CPU with 2+ cores, else 1)")
    parser.add_argument("--out", default=None, help="output folder (default: a temporary one)")
    parser.add_argument("--reload-all", action="store_true",
                        help="--eval-only from the checkpoint for every config, not one per model")
    args = parser.parse_args(argv)
    configs = [os.path.abspath(c) for c in args.configs] or config_files()
    workers = args.workers or (2 if args.device == "cpu" and (os.cpu_count() or 1) >= 2 else 1)
    out = args.out or tempfile.mkdtemp(prefix="config_check.")
    failed = 0
    for run in run_configs(configs, os.path.join(out, "data"), out, args.device, workers, args.reload_all):
        status = "ok  " if run.ok else "FAIL"
        failed += not run.ok
        seconds = f"{run.seconds[0]:5.1f} s + {run.seconds[1]:5.1f} s"
        print(f"{status} {seconds}  {os.path.relpath(run.config, REPO)}")
        for problem in run.problems:
            print("     " + problem.replace("\n", "\n     "))
    print(f"{len(configs) - failed} of {len(configs)} configs train and evaluate, "
          f"one per model reloads its checkpoint ({out})")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
