#!/usr/bin/env bash
# `make install`: creates the virtualenv $1 (default .venv) with the pinned requirements,
# detectron2 v0.6 and this repo's `common` package (editable).
set -euo pipefail
VENV=${1:-.venv}
cd "$(dirname "$0")/.."
if [ ! -x "$VENV/bin/python" ]; then
  python3 -m venv "$VENV"
fi
PY="$VENV/bin/python"
export PIP_DISABLE_PIP_VERSION_CHECK=1
"$PY" -m pip install --quiet -r requirements.txt
bash ci/install_detectron2.sh "$PY"
"$PY" -m pip install --quiet --no-deps --no-build-isolation -e .
"$PY" -m pip check
