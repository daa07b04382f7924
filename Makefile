# One entry point for everything: see README.md.
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.install-stamp
# Number of pytest workers is 1: the machine has 2 cores and torch already uses both.
PYTEST ?= $(PY) -m pytest

.PHONY: install demo test gpu-check lint bench toy clean

install: $(STAMP)

$(STAMP): requirements.txt pyproject.toml ci/install.sh ci/install_detectron2.sh $(wildcard ci/detectron2/*)
	bash ci/install.sh $(VENV)
	touch $@

# The main job: train + evaluate the demo detector on the toy data (CPU), then draw its detections.
demo: install
	$(PY) -m harness.demo_job

test: install
	$(PYTEST) -q

# On a CUDA machine: CUDA kernels vs their references, every config on CUDA, NCCL on 2 GPUs.
# Prints one line and exits 0 where no GPU is visible.
gpu-check: install
	$(PY) -m common.gpu_check

lint: install
	$(PY) -m ruff check .

# Speed and size of every baseline and project config (markdown table in output/bench/), then
# each project's own benchmarks (projects/*/tools/benchmark_*.py: custom ops, losses).
bench: install
	$(PY) -m harness.bench --out output/bench
	for tool in projects/*/tools/benchmark_*.py; do $(PY) $$tool || exit 1; done

# Trains every baseline on toy_shapes to its full toy schedule and evaluates it (CPU, minutes each).
toy: install
	$(PY) -m common.benchmark.toy --out output/toy

clean:
	rm -rf output .pytest_cache
	find . -name __pycache__ -prune -exec rm -rf {} +
