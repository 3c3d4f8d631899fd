#!/usr/bin/env bash
# Installs the npm packages from package-lock.json, once. Idempotent: a stamp holding the
# lock file's hash skips `npm ci` while node_modules matches it.
set -euo pipefail
cd "$(dirname "$0")/.."
stamp=node_modules/.influence-lens-lock.sha256
want=$(sha256sum package-lock.json | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  echo "bootstrap: npm ci" >&2
  npm ci --no-audit --no-fund
  echo "$want" > "$stamp"
fi
