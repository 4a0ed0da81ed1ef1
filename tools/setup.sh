#!/usr/bin/env bash
# Idempotent environment setup for mmbackbones.
#
#   bash tools/setup.sh            # create/refresh the venv, install the versions pinned in
#                                  # requirements/constraints.txt (the ranges are in pyproject.toml)
#
# Environment knobs:
#   MMB_VENV    where the virtual environment lives        (default: <repo>/.venv)
#   MMB_CACHE   where the built mmcv wheel is cached       (default: ~/.cache/mmbackbones)
#   MMB_PYTHON  interpreter used to create the venv        (default: python3.11, else python3)
#   MAX_JOBS    parallel compile jobs for the mmcv build   (default: nproc)
#
# mmcv 2.1.0 is source-only on PyPI. It is built once with its C++ ops and cached outside the
# repository, keyed by mmcv, torch, Python and platform, so later setups (and CI in a fresh clone)
# just install the cached wheel.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${MMB_VENV:-$REPO/.venv}"
CACHE="${MMB_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/mmbackbones}"
CONSTRAINTS="$REPO/requirements/constraints.txt"
pin() {  # pin NAME -> the version (or spec, for setuptools) requirements/constraints.txt gives NAME
  local line
  line="$(grep -E "^$1(==|>|<|~)" "$CONSTRAINTS" | head -n 1)"
  [ -n "$line" ] || { echo "setup: $CONSTRAINTS pins no $1" >&2; exit 1; }
  case "$line" in "$1=="*) echo "${line#"$1"==}" ;; *) echo "$line" ;; esac
}
TORCH_VERSION="$(pin torch)"
TORCHVISION_VERSION="$(pin torchvision)"
MMCV_VERSION="$(pin mmcv)"
SETUPTOOLS_SPEC="$(pin setuptools)"

log() { printf '[setup %(%H:%M:%S)T] %s\n' -1 "$*"; }

pick_python() {
  if [ -n "${MMB_PYTHON:-}" ]; then echo "$MMB_PYTHON"; return; fi
  for p in python3.11 python3; do
    if command -v "$p" >/dev/null 2>&1; then echo "$p"; return; fi
  done
  echo "setup: no python3 interpreter found; install Python 3.11 or set MMB_PYTHON" >&2
  exit 1
}

if [ ! -x "$VENV/bin/python" ]; then
  PY="$(pick_python)"
  log "creating virtual environment $VENV with $($PY --version)"
  "$PY" -m venv "$VENV"
fi
PYBIN="$VENV/bin/python"
pip_q() { "$PYBIN" -m pip --disable-pip-version-check "$@"; }

have() {  # have PKG VERSION -> true when that exact version is installed
  [ "$("$PYBIN" - "$1" <<'PY' 2>/dev/null
import sys
from importlib.metadata import version, PackageNotFoundError
try:
    print(version(sys.argv[1]).split('+')[0])
except PackageNotFoundError:
    print('')
PY
)" = "$2" ]
}

if ! "$PYBIN" - "$SETUPTOOLS_SPEC" <<'PY' 2>/dev/null
import sys
from importlib.metadata import version
try:  # pip's copy: a fresh venv has pip, not always packaging
    from pip._vendor.packaging.requirements import Requirement
except ImportError:
    from packaging.requirements import Requirement
sys.exit(not Requirement(sys.argv[1]).specifier.contains(version('setuptools')))
PY
then
  log "installing build tools ($SETUPTOOLS_SPEC, wheel, ninja)"
  pip_q install -q "$SETUPTOOLS_SPEC" wheel ninja
fi

if ! have torch "$TORCH_VERSION" || ! have torchvision "$TORCHVISION_VERSION"; then
  log "installing torch==$TORCH_VERSION torchvision==$TORCHVISION_VERSION (large; a few minutes)"
  pip_q install --progress-bar on "torch==$TORCH_VERSION" "torchvision==$TORCHVISION_VERSION"
fi

# ---------------------------------------------------------------- mmcv with ops, cached wheel
if ! have mmcv "$MMCV_VERSION" || ! "$PYBIN" -c "import mmcv.ops" >/dev/null 2>&1; then
  PYTAG="$("$PYBIN" -c 'import sys; print(f"cp{sys.version_info[0]}{sys.version_info[1]}")')"
  CUDATAG="$("$PYBIN" -c 'import os, torch; print("cuda" if (torch.cuda.is_available() or os.environ.get("FORCE_CUDA") == "1") else "cpu")')"
  KEY="mmcv-${MMCV_VERSION}_torch-${TORCH_VERSION}_${PYTAG}_$(uname -m)_${CUDATAG}"
  WHEELDIR="$CACHE/wheels/$KEY"
  mkdir -p "$CACHE/wheels"
  # One builder at a time: a second setup waits for the first one's wheel instead of rebuilding.
  exec 9>"$CACHE/wheels/$KEY.lock"
  flock 9
  if ! ls "$WHEELDIR"/mmcv-*.whl >/dev/null 2>&1; then
    log "no cached mmcv wheel for $KEY: building mmcv $MMCV_VERSION with ops (about 18 minutes on 2 cores)"
    pip_q install -q ninja psutil
    BUILD="$(mktemp -d "$CACHE/build.XXXXXX")"
    trap 'rm -rf "$BUILD"' EXIT
    pip_q download -q --no-deps --no-binary :all: --no-build-isolation "mmcv==$MMCV_VERSION" -d "$BUILD"
    tar -xzf "$BUILD"/mmcv-"$MMCV_VERSION".tar.gz -C "$BUILD"
    SRC="$BUILD/mmcv-$MMCV_VERSION"
    # torch >= 2.10 headers need C++20; mmcv 2.1.0 hard-codes -std=c++17.
    sed -i 's/-std=c++17/-std=c++20/g' "$SRC/setup.py"
    grep -q -- '-std=c++20' "$SRC/setup.py" || { echo "setup: could not patch mmcv's C++ standard flag" >&2; exit 1; }
    BUILDLOG="$CACHE/wheels/$KEY.build.log"
    ( cd "$SRC" && MMCV_WITH_OPS=1 MAX_JOBS="${MAX_JOBS:-$(nproc)}" \
        "$PYBIN" -m pip --disable-pip-version-check wheel -v --no-deps --no-build-isolation . -w "$BUILD/out" ) \
        >"$BUILDLOG" 2>&1 &
    pid=$!
    start=$SECONDS
    while kill -0 "$pid" 2>/dev/null; do
      sleep 30
      step="$(grep -o '\[[0-9]*/[0-9]*\]' "$BUILDLOG" | tail -n 1 || true)"
      log "mmcv build: $(( (SECONDS - start) / 60 )) min elapsed, ninja step ${step:-(starting)} (log: $BUILDLOG)"
    done
    if ! wait "$pid"; then
      tail -n 40 "$BUILDLOG" >&2
      echo "setup: the mmcv build failed; full log in $BUILDLOG" >&2
      exit 1
    fi
    mkdir -p "$WHEELDIR.tmp" && mv "$BUILD"/out/mmcv-*.whl "$WHEELDIR.tmp"/ && mv "$WHEELDIR.tmp" "$WHEELDIR"
    log "cached $(ls "$WHEELDIR")"
  else
    log "using cached mmcv wheel $(ls "$WHEELDIR")"
  fi
  flock -u 9
  pip_q install -q --no-deps --force-reinstall "$WHEELDIR"/mmcv-*.whl
fi

# ---------------------------------------------------------------- the package and its pins
STAMP="$VENV/.mmbackbones-installed"
# Reinstall when the ranges (pyproject.toml) or the pins (constraints) change, or the repo moves.
WANT="$(cat "$REPO/pyproject.toml" "$CONSTRAINTS" | sha256sum | cut -c1-16) $REPO"
if [ ! -f "$STAMP" ] || [ "$(cat "$STAMP")" != "$WANT" ]; then
  log "installing mmbackbones (editable) with the [test,lint] extras, pinned by $CONSTRAINTS"
  pip_q install -q -c "$CONSTRAINTS" -e "$REPO[test,lint]"
  echo "$WANT" >"$STAMP"
fi

"$PYBIN" - <<'PY'
import mmcv, mmcv.ops, mmdet, mmengine, torch, setuptools
print(f"[setup] ready: torch {torch.__version__}, mmcv {mmcv.__version__} (ops), "
      f"mmengine {mmengine.__version__}, mmdet {mmdet.__version__}, setuptools {setuptools.__version__}")
PY
