#!/usr/bin/env bash
# Create .venv and install isoflop into it (editable). `./setup.sh test` adds the test tools.
# Where there is no GPU, the CPU build of torch goes in first, so that pip never pulls a
# multi-GB CUDA build to satisfy the torch requirement.
set -euo pipefail
cd "$(dirname "$0")"
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
pip() { .venv/bin/python -m pip "$@"; }
if ! .venv/bin/python -c "import torch" 2>/dev/null; then
  if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
    pip install -q "torch>=2.3,<2.15"
  else
    pip install -q "torch==2.13.0" || pip install -q "torch>=2.3,<2.15" --index-url https://download.pytorch.org/whl/cpu
  fi
fi
# the HTML report's test opens it in a real headless Chromium (Debian's package)
if [ "${1:-}" = test ] && ! command -v chromium >/dev/null 2>&1 && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  apt-get install -y -qq chromium >/dev/null 2>&1 || { apt-get update -qq && apt-get install -y -qq chromium >/dev/null; }
fi
# the PostgreSQL store's test starts a private server from Debian's postgresql binaries
if [ "${1:-}" = test ] && ! ls /usr/lib/postgresql/*/bin/pg_ctl >/dev/null 2>&1 && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y -qq --no-install-recommends postgresql >/dev/null 2>&1 || { apt-get update -qq && apt-get install -y -qq --no-install-recommends postgresql >/dev/null; }
fi
case "${1:-}" in
  test)  pip install -q -e ".[test]" ;;
  bench) pip install -q -e ".[test,bench]" ;;
  *)     pip install -q -e . ;;
esac
.venv/bin/python -c "import isoflop, torch; print('isoflop', isoflop.__version__, 'torch', torch.__version__)"
