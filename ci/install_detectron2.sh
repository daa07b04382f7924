#!/usr/bin/env bash
# Installs detectron2 v0.6 into the Python environment of $1 (a python executable), the same
# install on CPU and GPU machines: the official v0.6 Python sources from the PyPI sdist
# pb1-detectron2==0.6 (sha256-checked), plus ci/detectron2/v0.6-compat.patch (only the upstream
# fixes any v0.6 needs to import and run on today's numpy/Pillow/setuptools; no behaviour fix:
# packages carry those themselves) and ci/detectron2/_C.py (a stand-in for the compiled ops,
# which torchvision's CPU/CUDA ops replace), installed as the distribution `detectron2`.
# A detectron2 already there (e.g. a source build of v0.6, which fails with the pinned
# numpy/Pillow) is replaced, with a message.
set -euo pipefail

PY=${1:?usage: install_detectron2.sh PYTHON}
HERE=$(cd "$(dirname "$0")" && pwd)
SDIST=pb1-detectron2-0.6.tar.gz
SHA256=5d2e9e51e523ec72f6a31cca04b0a515492e9514b773a3d134cedc0677170b29
# Bumped whenever the patch or the stand-in changes, so that `make install` re-installs.
BUILD_TAG=$(cat "$HERE/detectron2/v0.6-compat.patch" "$HERE/detectron2/_C.py" \
  "$HERE/detectron2/pyproject.toml" | sha256sum | cut -c1-12)

state=$("$PY" - <<'PYEOF'
import importlib.util, os
spec = importlib.util.find_spec("detectron2")
if spec is None:
    print("missing")
else:
    c = importlib.util.find_spec("detectron2._C")
    origin = c.origin if c else ""
    print("compiled" if origin.endswith((".so", ".pyd")) else "python:" + os.path.dirname(spec.origin))
PYEOF
)
case "$state" in
  compiled)
    echo "Replacing the compiled detectron2 in this environment by v0.6 with the compatibility" \
      "fixes (a v0.6 build without them fails with numpy >= 1.24 / Pillow >= 10; see README)." ;;
  python:*)
    if [ "$(cat "${state#python:}/.install-tag" 2>/dev/null)" = "$BUILD_TAG" ]; then
      echo "detectron2 v0.6 (Python sources, tag $BUILD_TAG) is up to date."
      exit 0
    fi ;;
esac

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
"$PY" -m pip download --quiet --no-deps --no-build-isolation --no-binary :all: \
  -d "$work" pb1-detectron2==0.6
echo "$SHA256  $work/$SDIST" | sha256sum --check --quiet
tar -xzf "$work/$SDIST" -C "$work"
src="$work/pb1-detectron2-0.6"
# The sdist's setup.py builds C++ sources it does not ship; our pyproject.toml replaces it.
rm -f "$src/setup.py" "$src/setup.cfg"
rm -rf "$src"/*.egg-info
(cd "$src" && git apply -p1 "$HERE/detectron2/v0.6-compat.patch")
cp "$HERE/detectron2/_C.py" "$src/detectron2/_C.py"
cp "$HERE/detectron2/pyproject.toml" "$src/pyproject.toml"
echo "$BUILD_TAG" > "$src/detectron2/.install-tag"
"$PY" -m pip uninstall --quiet --yes detectron2 pb1-detectron2 2>/dev/null || true
"$PY" -m pip install --quiet --no-deps --no-build-isolation "$src"
"$PY" -c "import detectron2, detectron2.layers; print('installed detectron2', detectron2.__version__, 'at', detectron2.__path__[0])"
