"""``make toy``: trains each toy config to its full schedule through its real entry point,
evaluates it on its test set, and writes a results table.

    python -m common.benchmark.toy --out output/toy                 # the three baselines
    python -m common.benchmark.toy --configs projects/GFL/configs/toy/gfl_R-18-FPN_toy.yaml
    python -m common.benchmark.toy --configs CONFIG -- MODEL.GFL.ANCHOR_SCALE 8.0   # overrides

Writes ``<out>/toy.md`` and ``<out>/toy.json``; each run's files are in ``<out>/<config stem>``.
"""

import argparse
import json
import os
import platform
import subprocess
import time

from common.projects import BASELINE_TOY_CONFIGS, REPO, train_command


def run_one(path, out, opts=()):
    stem = os.path.splitext(os.path.basename(path))[0]
    out_dir = os.path.join(out, stem)
    cmd = train_command(path, "OUTPUT_DIR", os.path.abspath(out_dir), *opts)
    start = time.time()
    with open(os.path.join(out, stem + ".log"), "w") as log:
        subprocess.run(cmd, cwd=REPO, stdout=log, stderr=subprocess.STDOUT, check=True)
    minutes = (time.time() - start) / 60
    metrics = [json.loads(line) for line in open(os.path.join(out_dir, "metrics.json"))]
    final = [m for m in metrics if "bbox/AP" in m][-1]
    times = [m["time"] for m in metrics if "time" in m]
    return {
        "config": os.path.relpath(path, REPO),
        "AP": final["bbox/AP"], "AP50": final["bbox/AP50"], "AP75": final["bbox/AP75"],
        "APs": final["bbox/APs"], "APm": final["bbox/APm"], "APl": final["bbox/APl"],
        "minutes": minutes,
        "s_per_iter": sum(times) / max(len(times), 1),
        "iters": max(m["iteration"] for m in metrics if "total_loss" in m) + 1,
        "command": " ".join(["python"] + cmd[1:]).replace(REPO + os.sep, ""),
    }


def _fmt(v):
    return "n/a" if v != v else f"{v:.1f}"  # NaN: no object of that size in the test set


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="output/toy")
    parser.add_argument("--configs", nargs="*", help="default: the baselines' toy configs")
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides for every run")
    args = parser.parse_args(argv)
    if args.opts[:1] == ["--"]:  # ends the list of --configs
        args.opts = args.opts[1:]
    os.makedirs(args.out, exist_ok=True)
    rows = []
    for path in args.configs or BASELINE_TOY_CONFIGS:
        rows.append(run_one(path, args.out, args.opts))
        print(json.dumps(rows[-1]), flush=True)
    machine = f"{platform.machine()}, {os.cpu_count()} CPU threads"
    with open(os.path.join(args.out, "toy.json"), "w") as f:
        json.dump({"machine": machine, "rows": rows}, f, indent=1)
    lines = [
        f"Machine: {machine}. Command: `make toy` (or `python -m common.benchmark.toy "
        "--configs CONFIG`); each row's own command is in toy.json.",
        "",
        "| config | AP | AP50 | AP75 | APs | APm | APl | iters | minutes | s/iter |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['config']} | {_fmt(r['AP'])} | {_fmt(r['AP50'])} | {_fmt(r['AP75'])} | "
            f"{_fmt(r['APs'])} | {_fmt(r['APm'])} | {_fmt(r['APl'])} | {r['iters']} | "
            f"{r['minutes']:.1f} | {r['s_per_iter']:.2f} |"
        )
    with open(os.path.join(args.out, "toy.md"), "w") as f:
        f.write("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
