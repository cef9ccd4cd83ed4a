#!/usr/bin/env bash
# Does a container kernel on an offline-built CUDA image compute on this machine's GPU?
#
#   benchmarks/gpu_check.sh [--cuda 12.9] [--libraries runtime,nvrtc,cublas]
#                           [--with auto|none|cupy|torch] [--dry-run] [--keep]
#
# Needs: an NVIDIA GPU and driver, Docker with the NVIDIA container toolkit (docker.gpus
# uses Docker's device requests), mmdebstrap and Debian apt sources on the host (or
# DSS_CONTAINERS_APT_SOURCES), this package installed in $PYTHON (default python3), and PyPI
# (or a pip index) for the wheels. Prints one PASS or FAIL line; exit 0 PASS, 1 FAIL, 2 unable
# to run. --dry-run asks for no GPU (any machine): a check of the script itself.
set -uo pipefail
PYTHON=${PYTHON:-python3}
here=$(cd "$(dirname "$0")" && pwd)
missing=()
command -v docker >/dev/null || missing+=("docker (the CLI, to check the daemon)")
command -v mmdebstrap >/dev/null || missing+=("mmdebstrap (apt-get install mmdebstrap)")
"$PYTHON" -c 'import jupyter_dss_containers' 2>/dev/null || missing+=("jupyter-dss-containers in $PYTHON")
if [ ${#missing[@]} -gt 0 ]; then
  printf 'FAIL: cannot run, missing: %s\n' "${missing[@]}"
  exit 2
fi
if ! docker info >/dev/null 2>&1; then
  echo "FAIL: cannot run, the Docker daemon does not answer (docker info)"
  exit 2
fi
case " $* " in
  *" --dry-run "*) ;;
  *)
    if command -v nvidia-smi >/dev/null; then
      nvidia-smi -L
    else
      echo "note: no nvidia-smi on this host: is the NVIDIA driver installed?"
    fi
    docker info --format '{{json .Runtimes}}' | grep -q nvidia \
      || echo "note: Docker lists no 'nvidia' runtime (fine if the toolkit's CDI or hook is set up)"
    ;;
esac
exec "$PYTHON" "$here/gpu_check.py" "$@"
