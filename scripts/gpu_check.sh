#!/usr/bin/env bash
# One short GPU check (under 5 minutes on an H100/H200): EmbGPT against nanoGPT's model (scripts/
# nanogpt_reference_loop.py) and transformers' GPT2LMHeadModel at GPT-2 124M, batch 12 x 1024, bf16, fused AdamW,
# eager and torch.compile'd; peak memory; batch-1 static-cache decoding; a short `embgpt train --torch_compile` run
# against the raw loop; EmbGPT's fused_loss memory mode where liger_kernel is installed. See scripts/gpu_check.py.
# Writes $OUT/gpu_check.json (or ./gpu_check.json) and prints a table with the ratios.
#
#   bash scripts/gpu_check.sh              # on the GPU machine, from anywhere in the checkout
#   DRY_RUN=1 bash scripts/gpu_check.sh    # tiny model on the CPU, a few steps: a check of the script itself
#   bash scripts/gpu_check.sh --dry-run    # the same
set -euo pipefail
cd "$(dirname "$0")/.."
DRY_RUN=${DRY_RUN:-0}
EXTRA=()
for arg in "$@"; do
  case "$arg" in
    --dry-run) DRY_RUN=1 ;;
    *) EXTRA+=("$arg") ;;
  esac
done
PYTHON=${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}

# Wheels carried to a machine without an index (datasets==4.0.0, dill==0.3.8, multiprocess==0.70.16 for
# Python 3.12): installed into a private folder, never into the machine's environment.
if compgen -G ".whl/*.whl" > /dev/null; then
  "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
  export PYTHONPATH="/tmp/site${PYTHONPATH:+:$PYTHONPATH}"
fi
# the package from this working tree, without installing it (no network needed)
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
export TOKENIZERS_PARALLELISM=false

if [ "$DRY_RUN" = 1 ]; then
  EXTRA+=(--dry-run)
else
  nvidia-smi --query-gpu=name,memory.total,clocks.max.sm --format=csv 2>/dev/null || true
fi
"$PYTHON" -c "import torch, transformers; print('torch', torch.__version__, 'transformers', transformers.__version__)"
# a hard stop beyond the script's own time budget (280 s), in case one variant hangs
exec timeout "${GPU_CHECK_TIMEOUT:-540}" "$PYTHON" scripts/gpu_check.py --out "${OUT:-.}/gpu_check.json" "${EXTRA[@]}"
