#!/usr/bin/env bash
# The full test suite: exactly what CI runs (.ci/run calls `npm test`, which runs this).
# Unit tests (node:test), integration tests (mocha inside code-server's real extension host),
# then the packaged VSIX end to end in headless Chromium; ends with `N passed, N failed`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
bash scripts/vscode/setup.sh
npm run --silent typecheck
npm run --silent lint
npm run --silent build
logs=.cache/test-logs
rm -rf "$logs" && mkdir -p "$logs"
status=0
mapfile -t files < <(find test/unit -name '*.test.ts' | sort)
node --import tsx --test --test-reporter=spec "${files[@]}" 2>&1 | tee "$logs/unit.log" || status=1
node scripts/vscode/build-tests.mjs
node scripts/vscode/run-integration.mjs 2>&1 | tee "$logs/integration.log" || status=1
vsix=$(bash scripts/vscode/package.sh .cache/influence-lens-linux-x64.vsix) || status=1
node test/e2e/e2e.mjs ${vsix:+--vsix "$vsix"} --screenshots .cache/screenshots 2>&1 | tee "$logs/e2e.log" || status=1
node scripts/vscode/summary.mjs unit="$logs/unit.log" integration="$logs/integration.log" e2e="$logs/e2e.log" || status=1
exit $status
