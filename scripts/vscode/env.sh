# Sourced (not run) by the scripts under scripts/vscode/: where the real-VS-Code toolchain lives.
# Installs nothing: scripts/vscode/setup.sh does that. Sets, and exports:
#   IL_ROOT       the repository root
#   IL_ENV_DIR    .cache/vscode-env (everything setup.sh installs lives under it)
#   IL_RUN_DIR    a run folder (default .cache/vscode-env/run; callers may set it first)
#   NODE24_DIR    the unpacked Node 24 (code-server needs exactly Node 24); NODE24 its binary
#   CODE_SERVER   the code-server launcher; CHROMIUM Debian's chromium
#   XDG_CONFIG_HOME/XDG_DATA_HOME/XDG_CACHE_HOME under IL_RUN_DIR, ORT_DISABLE_TELEMETRY=1, so that
#   code-server, VS Code, onnxruntime-node and Chromium write nothing into the home folder.
IL_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
IL_ENV_DIR=$IL_ROOT/.cache/vscode-env
IL_RUN_DIR=${IL_RUN_DIR:-$IL_ENV_DIR/run}
IL_NODE24_VERSION=24.21.0
IL_CODE_SERVER_VERSION=4.139.1
NODE24_DIR=$IL_ENV_DIR/node24
NODE24=$NODE24_DIR/bin/node
CODE_SERVER=$IL_ENV_DIR/code-server/bin/code-server
CHROMIUM=${CHROMIUM:-/usr/bin/chromium}
XDG_CONFIG_HOME=$IL_RUN_DIR/xdg/config
XDG_DATA_HOME=$IL_RUN_DIR/xdg/data
XDG_CACHE_HOME=$IL_RUN_DIR/xdg/cache
ORT_DISABLE_TELEMETRY=1
export IL_ROOT IL_ENV_DIR IL_RUN_DIR IL_NODE24_VERSION IL_CODE_SERVER_VERSION NODE24_DIR NODE24 \
  CODE_SERVER CHROMIUM XDG_CONFIG_HOME XDG_DATA_HOME XDG_CACHE_HOME ORT_DISABLE_TELEMETRY
