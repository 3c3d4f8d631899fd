#!/usr/bin/env bash
# The main job on the bundled sample: explain a misclassified digit of samples/digits.
# Extra arguments go to `influence-lens explain` (e.g. --json, --test-row 40).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
npm run --silent build
node dist/cli.js explain --model samples/digits/model.onnx --train samples/digits/train.csv \
  --test samples/digits/test.csv --test-row 146 --top 8 "$@"
