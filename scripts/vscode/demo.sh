#!/usr/bin/env bash
# The demo: Influence Lens in a real VS Code (code-server, in the browser), on the bundled sample.
#   bash scripts/vscode/demo.sh          (PORT=9000 bash scripts/vscode/demo.sh to choose the port)
# Installs what it needs (scripts/vscode/setup.sh, npm ci via scripts/bootstrap.sh), builds, packages
# the linux-x64 VSIX, installs it into a fresh extensions dir under .cache/vscode-env/demo/, copies
# samples/digits to .cache/vscode-env/demo/workspace (once; your edits there are kept), and serves
# code-server on 127.0.0.1, trusted workspace, no password. Prints one line `URL: http://…` when
# the server answers; runs in the foreground; Ctrl-C (or SIGTERM) stops everything it started.
# Port: $PORT, else 8080 when free, else a free one. Progress lines go to stderr.
set -euo pipefail
cd "$(dirname "$0")/../.."
demo=.cache/vscode-env/demo
say() { echo "demo: $*" >&2; }

bash scripts/vscode/setup.sh
bash scripts/bootstrap.sh >&2
say "building"
npm run --silent build >&2
say "packaging the VSIX"
mkdir -p "$demo"
vsix=$(bash scripts/vscode/package.sh "$demo/influence-lens-linux-x64.vsix")
rm -rf "$demo/ext" "$demo/run"
say "installing it into $demo/ext"
node --input-type=module -e "
  const { installExtension } = await import('./scripts/vscode/server.mjs');
  installExtension(process.argv[1], process.argv[2], { runDir: process.argv[3] });" "$vsix" "$demo/ext" "$demo/run" >/dev/null
if [ ! -d "$demo/workspace" ]; then
  node --input-type=module -e "
    const { copySample } = await import('./scripts/vscode/server.mjs');
    copySample(process.argv[1], { overwrite: false });" "$demo/workspace"
  # Pre-configured as the walkthrough's "Open the Bundled Sample" does, validation set included.
  mkdir -p "$demo/workspace/.vscode"
  printf '%s\n' '{' '  "model": "model.onnx",' '  "train": "train.csv",' '  "test": "test.csv",' \
    '  "validation": "validation.csv",' '  "labelColumn": "label"' '}' > "$demo/workspace/.vscode/influence-lens.json"
fi

port_args=()
if [ -n "${PORT:-}" ]; then
  port_args=(--port "$PORT")
elif node -e "const s=require('net').createServer().once('error',()=>process.exit(1)).listen(8080,'127.0.0.1',()=>s.close())" 2>/dev/null; then
  port_args=(--port 8080)
fi
say "starting code-server (Ctrl-C stops it)"
# exec: server.mjs receives the signals itself and stops code-server's whole process group.
exec node scripts/vscode/server.mjs --run-dir "$demo/run" --folder "$PWD/$demo/workspace" \
  --extensions-dir "$demo/ext" "${port_args[@]}"
