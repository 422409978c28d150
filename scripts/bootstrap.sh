#!/usr/bin/env bash
# Set up (or refresh) .venv with xtlens and its test tools. Idempotent and quick when nothing changed.
#
#   scripts/bootstrap.sh            the package, its dependencies and the test extra
#   scripts/bootstrap.sh --browser  the same, plus Debian's chromium for the browser test (needs root or sudo)
#
# Torch: an importable torch is kept (create the venv with XTLENS_VENV_FLAGS=--system-site-packages to
# reuse a CUDA build you already have). Otherwise the pinned CPU wheel torch==2.13.0 is taken from the
# machine's local wheel folder when pip finds it there without an index (seconds); failing that, pip
# installs a torch in the pyproject range from the index (on Linux that is a multi-GB CUDA build).
set -euo pipefail
cd "$(dirname "$0")/.."

want_browser=0
for arg in "$@"; do
  case "$arg" in
    --browser) want_browser=1 ;;
    *) echo "bootstrap: unknown option $arg" >&2; exit 2 ;;
  esac
done

PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  echo "bootstrap: creating .venv with $($PY --version)" >&2
  # shellcheck disable=SC2086
  $PY -m venv ${XTLENS_VENV_FLAGS:-} .venv
fi
VPY=.venv/bin/python
# pip, quiet, without the noise of this machine's local index folders; pip's exit status is kept
pipq() {
  local out rc=0
  out=$("$VPY" -m pip --disable-pip-version-check -q "$@" 2>&1) || rc=$?
  printf '%s\n' "$out" | grep -v -e "is ignored: it is neither a file nor a directory" -e '^$' >&2 || true
  return "$rc"
}

if ! "$VPY" -c "import torch" >/dev/null 2>&1; then
  echo "bootstrap: installing torch" >&2
  # The wheel itself from the local folder only (--no-index --no-deps fails fast where there is none),
  # then its small pure-Python dependencies from the index.
  if "$VPY" -m pip -q install --no-index --no-deps "torch==2.13.0" >/dev/null 2>&1; then
    pipq install "torch==2.13.0"
  else
    pipq install "torch>=2.4"
  fi
  "$VPY" -c "import torch" || { echo "bootstrap: torch did not install" >&2; exit 1; }
fi

stamp=.venv/.xtlens-installed
digest=$(sha256sum pyproject.toml | cut -c1-16)
if [ ! -x .venv/bin/xtlens ] || [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$digest" ]; then
  echo "bootstrap: installing xtlens and its dependencies" >&2
  pipq install -e ".[test]" || { echo "bootstrap: pip install -e .[test] failed" >&2; exit 1; }
  echo "$digest" > "$stamp"
fi

if [ "$want_browser" = 1 ] && [ ! -x /usr/bin/chromium ]; then
  echo "bootstrap: installing Debian's chromium for the browser test" >&2
  SUDO=""
  [ "$(id -u)" = 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq chromium >/dev/null
  [ -x /usr/bin/chromium ] || { echo "bootstrap: chromium did not install" >&2; exit 1; }
fi
echo "bootstrap: ready ($("$VPY" -c 'import torch, x_transformers, importlib.metadata as m; print("torch", torch.__version__, "| x-transformers", m.version("x-transformers"))'))" >&2
