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

TABLE_COLUMNS = {
    "bbox": ("AP", "AP50", "AP75", "APs", "APm", "APl"),
    "crowd": ("AP", "MR", "recall", "JI"),  # MR is MR^-2 (lower is better)
}
# Mask models' COCO mask AP (a second table; the box AP of the same runs is in the first).
SEGM_COLUMNS = ("AP", "AP50", "AP75", "APs", "APm", "APl")


def run_one(path, out, opts=()):
    stem = os.path.splitext(os.path.basename(path))[0]
    out_dir = os.path.join(out, stem)
    cmd = train_command(path, "OUTPUT_DIR", os.path.abspath(out_dir), *opts)
    start = time.time()
    with open(os.path.join(out, stem + ".log"), "w") as log:
        subprocess.run(cmd, cwd=REPO, stdout=log, stderr=subprocess.STDOUT, check=True)
    minutes = (time.time() - start) / 60
    metrics = [json.loads(line) for line in open(os.path.join(out_dir, "metrics.json"))]
    # COCO box AP, or the crowd metrics (CrowdHuman-style datasets such as toy_crowd).
    final = [m for m in metrics if "bbox/AP" in m or "crowd/AP" in m][-1]
    task = "bbox" if "bbox/AP" in final else "crowd"
    times = [m["time"] for m in metrics if "time" in m]
    segm = {k: final[f"segm/{k}"] for k in SEGM_COLUMNS} if "segm/AP" in final else None
    return {
        "config": os.path.relpath(path, REPO),
        "task": task,
        **{k: final[f"{task}/{k}"] for k in TABLE_COLUMNS[task]},
        "segm": segm,
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
    ]
    for task, columns in TABLE_COLUMNS.items():
        task_rows = [r for r in rows if r["task"] == task]
        if not task_rows:
            continue
        names = [c.replace("MR", "MR^-2") for c in columns]
        lines += ["", "| config | " + " | ".join(names) + " | iters | minutes | s/iter |",
                  "|---|" + "---:|" * (len(columns) + 3)]
        for r in task_rows:
            lines.append(
                f"| {r['config']} | " + " | ".join(_fmt(r[c]) for c in columns)
                + f" | {r['iters']} | {r['minutes']:.1f} | {r['s_per_iter']:.2f} |"
            )
    segm_rows = [r for r in rows if r.get("segm")]
    if segm_rows:
        lines += ["", "| config | mask AP | AP50 | AP75 | APs | APm | APl |", "|---|" + "---:|" * 6]
        for r in segm_rows:
            lines.append(f"| {r['config']} | " + " | ".join(_fmt(r["segm"][c]) for c in SEGM_COLUMNS) + " |")
    with open(os.path.join(args.out, "toy.md"), "w") as f:
        f.write("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
