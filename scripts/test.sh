#!/usr/bin/env bash
# Set up and run the whole test suite against the highest and the lowest supported transformers 5.x.
#   bash scripts/test.sh                 # both
#   ONLY=highest bash scripts/test.sh    # or ONLY=lowest
set -uo pipefail
cd "$(dirname "$0")/.."
export TOKENIZERS_PARALLELISM=false HF_HUB_OFFLINE=1
status=0
if [ "${ONLY:-}" != lowest ]; then
  { bash scripts/setup.sh .venv test && .venv/bin/python -m pytest tests -p no:cacheprovider; } || status=1
fi
if [ "${ONLY:-}" != highest ]; then
  { bash scripts/setup.sh .venv-lowest test "transformers==5.10.1" &&
    .venv-lowest/bin/python -m pytest tests -p no:cacheprovider; } || status=1
fi
exit $status
