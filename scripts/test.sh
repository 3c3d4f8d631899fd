#!/usr/bin/env bash
# The full test suite: exactly what CI runs (.ci/run calls `npm test`, which runs this).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
npm run --silent typecheck
npm run --silent build
mapfile -t files < <(find test/unit -name '*.test.ts' | sort)
node --import tsx --test --test-reporter=spec "${files[@]}"
