#!/usr/bin/env bash
# Create a virtual environment with the CPU build of torch and hf_embgpt installed from this checkout.
#   bash scripts/setup.sh [VENV_DIR] [EXTRAS] [TRANSFORMERS_PIN]
#   bash scripts/setup.sh .venv train            # for training and generation
#   bash scripts/setup.sh .venv-lowest test "transformers==5.10.1"
set -euo pipefail
cd "$(dirname "$0")/.."
venv=${1:-.venv}
extras=${2:-test}
pin=${3:-}
[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
"$venv/bin/python" -m pip install -q --upgrade pip >/dev/null
# torch first: a bare `torch` requirement on a fresh venv would pull a multi-GB CUDA build
"$venv/bin/python" -m pip install -q "torch==2.13.0"
"$venv/bin/python" -m pip install -q -e ".[$extras]"
if [ -n "$pin" ]; then "$venv/bin/python" -m pip install -q "$pin"; fi
"$venv/bin/python" -c "import torch, transformers, hf_embgpt; print('torch', torch.__version__, '| transformers', transformers.__version__, '| hf_embgpt', hf_embgpt.__version__)"
