#!/usr/bin/env bash
# Mutation testing where it is cheap: the pure builders (the Kubernetes manifests,
# backends/kubernetes/manifests.py; the Docker create request, backends/docker/containers.py)
# and the permission check (permissions.py), against their unit tests
# (tests/test_kube_manifests.py, tests/test_docker_containers.py, tests/test_permissions.py),
# with mutmut.
#
#   pip install -e '.[mutation]'      # mutmut, outside the test extra
#   bash benchmarks/mutation.sh        # about 2-4 minutes on 2 cores
#
# It works in a scratch copy (mutmut rewrites the package under mutants/), with the mutmut
# settings written there, so the checkout is not touched. It prints mutmut's counts, the
# survivors, and the score: killed / (all mutants - the ones judged equivalent in
# benchmarks/README.md). It exits non-zero when the score is under MIN_SCORE (default 90).
# KEEP=1 keeps the scratch folder (to run `python -m mutmut show NAME` there).
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
min_score=${MIN_SCORE:-90}
python=${PYTHON:-python}
work=$(mktemp -d "${TMPDIR:-/tmp}/dss-mutation.XXXXXX")
if [[ "${KEEP:-}" != 1 ]]; then
    trap 'rm -rf "$work"' EXIT
fi

"$python" -c 'import mutmut' 2>/dev/null || {
    echo "mutmut is not installed: pip install -e '.[mutation]'" >&2
    exit 2
}

mkdir -p "$work/tests"
cp -r "$repo/jupyter_dss_containers" "$work/"
cp "$repo/tests/conftest.py" "$repo/tests/test_kube_manifests.py" "$repo/tests/test_permissions.py" \
    "$repo/tests/test_docker_containers.py" "$repo/tests/wheelhouse.py" "$work/tests/"
cp -r "$repo/tests/fake_kube" "$work/tests/"  # its Pod Security checks judge our pods
find "$work" -name __pycache__ -prune -exec rm -rf {} +
cp "$repo/setup.cfg" "$work/"
cat >>"$work/setup.cfg" <<'EOF'

[mutmut]
source_paths = jupyter_dss_containers
only_mutate =
    jupyter_dss_containers/backends/kubernetes/manifests.py
    jupyter_dss_containers/backends/docker/containers.py
    jupyter_dss_containers/permissions.py
pytest_add_cli_args_test_selection =
    tests/test_kube_manifests.py
    tests/test_docker_containers.py
    tests/test_permissions.py
pytest_add_cli_args =
    -p
    no:cacheprovider
    -q
EOF

cd "$work"
echo "mutating in $work ..."
# mutmut draws a progress line per mutant: keep only its last lines
"$python" -m mutmut run >"$work/run.log" 2>&1 || {
    tail -c 4000 "$work/run.log" >&2
    exit 1
}
"$python" -m mutmut export-cicd-stats >/dev/null
echo "survivors and mutants without tests:"
"$python" -m mutmut results 2>&1 | grep -E 'survived|no tests|timeout|suspicious' || echo "    none"

MIN_SCORE="$min_score" EQUIVALENT_FILE="$repo/benchmarks/README.md" "$python" - <<'EOF'
import json
import os
import re
import subprocess
import sys

stats = json.load(open("mutants/mutmut-cicd-stats.json"))
readme = open(os.environ["EQUIVALENT_FILE"]).read()
section = readme.split("<!-- equivalent mutants -->", 2)
listed = set(re.findall(r"`(x_\w+__mutmut_\d+)`", section[1] if len(section) == 3 else ""))
results = subprocess.run(
    [sys.executable, "-m", "mutmut", "results"], capture_output=True, text=True
).stdout
alive = {
    line.split(":")[0].strip().rsplit(".", 1)[-1]
    for line in results.splitlines()
    if line.strip().endswith(("survived", "no tests", "timeout", "suspicious"))
}
equivalent = alive & listed
unexplained = sorted(alive - listed)
total, killed = stats["total"], stats["killed"]
score = 100.0 * killed / max(1, total - len(equivalent))
print(
    f"mutants: {total}, killed: {killed}, survived: {stats['survived']}, "
    f"no tests: {stats['no_tests']}, timeout: {stats['timeout']}, "
    f"judged equivalent: {len(equivalent)}"
)
print(f"raw score (killed / all): {100.0 * killed / max(1, total):.1f}%")
print(f"mutation score (killed / all but equivalent): {score:.1f}%")
if unexplained:
    print("survivors not judged equivalent:", ", ".join(unexplained))
stale = sorted(listed - alive)
if stale:
    print("listed as equivalent but killed now (drop them from the list):", ", ".join(stale))
sys.exit(0 if score >= float(os.environ.get("MIN_SCORE", "90")) else 1)
EOF
