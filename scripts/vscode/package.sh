#!/usr/bin/env bash
# Builds the linux-x64 VSIX from what `npm run build` left in dist/ (builds nothing itself).
#   bash scripts/vscode/package.sh [OUT.vsix]     (default: influence-lens-VERSION-linux-x64.vsix)
# vsce runs in npm dependency mode (--no-dependencies would skip node_modules altogether) and the
# .vscodeignore allowlist keeps only the bundles, media, the sample, and onnxruntime-node's JS with
# its linux-x64 addon. The result is checked: required files present, nothing else shipped.
# Prints the VSIX path on stdout (last line); the summary goes to stderr.
set -euo pipefail
cd "$(dirname "$0")/../.."
version=$(node -p "require('./package.json').version")
out=${1:-influence-lens-$version-linux-x64.vsix}
for f in dist/extension.js dist/worker.js dist/hessian-worker.js dist/image-worker.js dist/mozjpeg_dec.wasm dist/webp_dec.wasm dist/webview.js; do
  [ -f "$f" ] || { echo "package: $f is missing: run npm run build first" >&2; exit 1; }
done
# No public repository yet: keep the README's relative links (its screenshots are not in the VSIX).
args=(package --target linux-x64 --no-rewrite-relative-links --out "$out")
ls LICENSE LICENSE.md LICENSE.txt >/dev/null 2>&1 || args+=(--skip-license)
log=$(mktemp)
trap 'rm -f "$log"' EXIT
if ! npx --no-install vsce "${args[@]}" >"$log" 2>&1; then
  cat "$log" >&2; echo "package: vsce package failed" >&2; exit 1
fi

# Check the contents.
mapfile -t entries < <(unzip -Z1 "$out")
bad=()
for e in "${entries[@]}"; do
  case "$e" in
    extension.vsixmanifest|'[Content_Types].xml'|extension/package.json|extension/package.nls*.json) ;;
    extension/readme.md|extension/README.md|extension/LICENSE*|extension/license*|extension/changelog.md|extension/CHANGELOG.md) ;;
    extension/dist/extension.js|extension/dist/worker.js|extension/dist/hessian-worker.js|extension/dist/image-worker.js|extension/dist/webview.js) ;;
    extension/dist/mozjpeg_dec.wasm|extension/dist/webp_dec.wasm) ;;
    extension/media/*|extension/samples/digits/*) ;;
    extension/node_modules/onnxruntime-node/bin/napi-v*/linux/x64/*) ;;
    extension/node_modules/onnxruntime-node/package.json|extension/node_modules/onnxruntime-node/dist/*.js) ;;
    extension/node_modules/onnxruntime-common/package.json|extension/node_modules/onnxruntime-common/dist/cjs/*.js|extension/node_modules/onnxruntime-common/dist/cjs/package.json) ;;
    *) bad+=("$e") ;;
  esac
done
# (grep -q on a pipe would end the writer early: with pipefail that reads as a failure.)
listing=$(printf '%s\n' "${entries[@]}")
[ ${#bad[@]} -eq 0 ] || { printf 'package: unexpected file in the VSIX: %s\n' "${bad[@]}" >&2; exit 1; }
for need in extension/package.json extension/dist/extension.js extension/dist/worker.js extension/dist/hessian-worker.js extension/dist/image-worker.js extension/dist/webview.js \
  extension/dist/mozjpeg_dec.wasm extension/dist/webp_dec.wasm \
  extension/node_modules/onnxruntime-node/dist/index.js extension/node_modules/onnxruntime-common/dist/cjs/index.js \
  extension/samples/digits/model.onnx; do
  grep -qxF "$need" <<<"$listing" || { echo "package: $need is missing from the VSIX" >&2; exit 1; }
done
grep -q '^extension/node_modules/onnxruntime-node/bin/napi-v[0-9]*/linux/x64/onnxruntime_binding.node$' <<<"$listing" \
  || { echo "package: the linux-x64 onnxruntime addon is missing from the VSIX" >&2; exit 1; }

size=$(du -k "$out" | cut -f1)
echo "package: $out: ${#entries[@]} entries, $((size / 1024)).$(( (size % 1024) * 10 / 1024 )) MiB (linux-x64 only)" >&2
echo "$out"
