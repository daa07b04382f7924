# One entry point for everything: see README.md.
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.install-stamp
PYTEST ?= $(PY) -m pytest

.PHONY: help install demo test gpu-check lint bench toy clean

# Lists the targets (none needs an activated venv: each installs first).
help:
	@awk '/^# / {if (!doc) doc = substr($$0, 3)} /^[a-z-]+:/ && doc {sub(":.*", "", $$1); printf "  make %-10s %s\n", $$1, doc} !/^# / {doc = ""}' $(MAKEFILE_LIST)

# Creates .venv with the pinned requirements, detectron2 v0.6 (compat fixes) and common.
install: $(STAMP)

$(STAMP): requirements.txt pyproject.toml ci/install.sh ci/install_detectron2.sh $(wildcard ci/detectron2/*)
	bash ci/install.sh $(VENV)
	touch $@

# The main job: train + evaluate the demo detector on the toy data (CPU), then draw its detections.
demo: install
	$(PY) -m harness.demo_job

# Runs every test (under 25 minutes on 2 cores).
# Two pytest workers, one core each (conftest.py); a test file runs in one worker, so the
# every-config runs (a module fixture) start once.
test: install
	$(PYTEST) -q -n 2 --dist loadfile

# On a CUDA machine: CUDA kernels vs their references, every config on CUDA, NCCL on 2 GPUs.
# Prints one line and exits 0 where no GPU is visible.
gpu-check: install
	$(PY) -m common.gpu_check

# ruff over the repo.
lint: install
	$(PY) -m ruff check .

# Speed/size of every toy config, each project's tools/benchmark_*.py, the COCO-size data check.
# (tables in output/bench/)
bench: install
	$(PY) -m harness.bench --out output/bench
	for tool in projects/*/tools/benchmark_*.py; do $(PY) $$tool || exit 1; done
	$(PY) -m common.benchmark.coco_check

# Trains + evaluates every baseline on toy_shapes, seeds 0-2 (CPU, about 2 hours in all).
# Mean ± std of each baseline in output/toy/toy.md.
toy: install
	$(PY) -m common.benchmark.toy --out output/toy

# Removes outputs (output/, projects/*/output/) and caches; keeps .venv and the toy data.
clean:
	rm -rf output projects/*/output .pytest_cache
	find . -name __pycache__ -prune -exec rm -rf {} +
