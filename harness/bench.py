"""``make bench``: size and speed of every baseline and project toy config, one process.

Writes ``<out>/bench.md`` (a markdown table) and ``<out>/bench.json``.
"""

import argparse
import json
import os
import platform

import torch
from detectron2.utils.logger import setup_logger

from common.benchmark.measure import measure
from common.data import prepare
from common.projects import BASELINE_TOY_CONFIGS, REPO, project_toy_configs
from harness.projects import load_config, trainer_class


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="output/bench")
    parser.add_argument("--configs", nargs="*", help="default: every baseline + project toy config")
    parser.add_argument("--train-iters", type=int, default=10)
    parser.add_argument("--weights-dir", default="output/toy",
                        help="<dir>/<config stem>_seed0/model_final.pth, where present, is timed "
                             "at inference (written by make toy); else the untrained model")
    args = parser.parse_args(argv)
    setup_logger(name="fvcore")
    configs = args.configs or BASELINE_TOY_CONFIGS + project_toy_configs()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cpu":
        machine = f"{platform.machine()}, {os.cpu_count()} CPU threads"
    else:
        machine = torch.cuda.get_device_name()
    rows = []
    for path in configs:
        stem = os.path.splitext(os.path.basename(path))[0]
        weights = os.path.join(args.weights_dir, f"{stem}_seed0", "model_final.pth")
        weights = weights if os.path.isfile(weights) else ""
        cfg = load_config(path, ["MODEL.DEVICE", device, "DATALOADER.NUM_WORKERS", "0",
                                 "MODEL.WEIGHTS", weights])
        for name in cfg.DATASETS.TRAIN + cfg.DATASETS.TEST:
            prepare(name)
        r = measure(cfg, train_iters=args.train_iters, trainer_cls=trainer_class(path))
        r["config"] = os.path.relpath(path, REPO)
        r["batch"] = cfg.SOLVER.IMS_PER_BATCH
        r["weights"] = weights or "untrained"
        rows.append(r)
        print(json.dumps(r))
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "bench.json"), "w") as f:
        json.dump({"machine": machine, "torch": torch.__version__, "rows": rows}, f, indent=1)
    lines = [
        f"Machine: {machine}; torch {torch.__version__}; command: `make bench`",
        "",
        "| config | params (M) | GFLOPs (1 test image) | train s/iter (batch) | inference ms/image "
        "| weights timed |",
        "|---|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['config']} | {r['params_M']:.2f} | {r['gflops']:.2f} | "
            f"{r['train_s_per_iter']:.3f} ({r['batch']}) | {r['infer_ms_per_image']:.1f} | "
            f"{os.path.relpath(r['weights'], REPO) if r['weights'] != 'untrained' else 'untrained'} |"
        )
    with open(os.path.join(args.out, "bench.md"), "w") as f:
        f.write("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
