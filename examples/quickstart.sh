#!/usr/bin/env bash
# The main job: set everything up (into .venv), run a kernel in a container from the embedded
# default configuration ('local'), then open JupyterLab with the extension: the kernel
# "Python 3 (local)" and the Containers sidebar. Arguments go to `jupyter lab`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash .ci/setup
VENV="${DSS_VENV:-$PWD/.venv}"
export PATH="$VENV/bin:$PATH"
python examples/hello_container_kernel.py
ROOT_FLAG=""
[ "$(id -u)" -eq 0 ] && ROOT_FLAG="--allow-root"
exec jupyter lab --ip=127.0.0.1 --no-browser $ROOT_FLAG "$@"
