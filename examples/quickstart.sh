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
if [ "$(id -u)" -eq 0 ]; then
  ROOT_FLAG="--allow-root"
  if [ "$(stat -c %u .)" = 0 ]; then  # kernels never run as root: say who they run as
    echo "note: JupyterLab runs as root, so container kernels run as 1000:100 (never root) and"
    echo "      may not write in this root-owned folder; to let them: chown -R 1000:100 $PWD"
  fi
fi
exec jupyter lab --ip=127.0.0.1 --no-browser $ROOT_FLAG "$@"
