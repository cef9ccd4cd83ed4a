"""Break the code on purpose in a scratch copy and check that the test naming the promise fails.

Each breakage below is a deliberate security bug (the four of issue 21, the privileged kernel
also split into its three parts, and a refusal that comes after a container was made). The
script copies the package and the tests to a scratch folder, runs the named tests there once
unbroken (they must pass, or a failure proves nothing), then applies each breakage to its own
fresh copy and runs the same tests against it. It prints ``breakage | test | result`` and
exits non-zero when a breakage passes a test that should catch it, when a test fails on the
unbroken copy, or when a breakage no longer finds the code it edits (the edits search for a
pattern across candidate files, so moved lines and a module split into a package do not stop
them).

    python benchmarks/breakages.py              # all (about 7 minutes on 2 cores)
    python benchmarks/breakages.py pool-key     # one breakage (and its baseline)
    KEEP=1 python benchmarks/breakages.py ...   # keep the scratch folders

The edits wrap a call or a function (the code around them is not rewritten), so they keep
working when the code they wrap changes inside.
"""

from __future__ import annotations

import dataclasses
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PACKAGE = "jupyter_dss_containers"
KIND_LABEL = "dss-containers.jupyter.org/kind"


@dataclasses.dataclass(frozen=True)
class Edit:
    """Replace ``pattern`` (a regex) in the files of ``candidates`` (globs under the package)
    that hold it, appending ``append`` to each file changed. At least one must match."""

    candidates: tuple[str, ...]
    pattern: str
    replacement: str
    append: str = ""


@dataclasses.dataclass(frozen=True)
class Breakage:
    name: str
    what: str
    edits: tuple[Edit, ...]
    tests: tuple[str, ...]


DOCKER_FILES = ("backends/docker.py", "backends/docker/*.py")
#: every container create call goes through the wrapper the breakage appends: the Docker
#: backend creates with the SDK's low-level ``<client>.api.create_container(**args)``
CREATE_CALL = r"\b(\w+)\.api\.create_container\("


def docker_create(body: str) -> Edit:
    """Wrap the Docker backend's ``<client>.api.create_container(...)``; ``body`` edits
    ``kw``, a view of the request in the SDK's high-level words (``privileged``,
    ``cap_add``, ``user``, ``read_only``, ``mounts``), written back into the request's
    ``HostConfig`` before the real call."""
    return Edit(
        DOCKER_FILES,
        CREATE_CALL,
        r"_breakage_create(\1, ",
        "\n\ndef _breakage_create(client, **request):  # a deliberate breakage\n"
        "    host = request.setdefault('host_config', {})\n"
        f"    kind = (request.get('labels') or {{}}).get({KIND_LABEL!r})\n"
        "    kw = {'privileged': host.get('Privileged', False), 'cap_add': host.get('CapAdd'),\n"
        "          'user': request.get('user'), 'read_only': host.get('ReadonlyRootfs', False),\n"
        "          'mounts': host.get('Mounts') or []}\n"
        + "".join(f"    {line}\n" for line in body.strip().splitlines())
        + "    host.update(Privileged=kw['privileged'], ReadonlyRootfs=kw['read_only'])\n"
        "    if kw['cap_add']:\n"
        "        host['CapAdd'] = kw['cap_add']\n"
        "    request['user'] = kw['user']\n"
        "    return client.api.create_container(**request)\n",
    )


KERNEL_ONLY = "if kind in ('kernel', 'pool'):"
#: a root kernel gets its folder made for root too, as a builder that meant it would: the
#: kernel then starts and works, and only the checks on what the engine holds can tell
ROOT_USER = f"""
{KERNEL_ONLY}
    import os
    kw['user'] = '0:0'
    for mount in kw.get('mounts') or []:
        if mount.get('Target') == '/tmp/.dss-kernel' and mount.get('Source'):
            for top, dirs, files in os.walk(mount['Source']):
                for name in [top] + [os.path.join(top, n) for n in dirs + files]:
                    os.chown(name, 0, 0)
"""

KUBE_FILES = ("backends/kubernetes/*.py", "backends/kubernetes.py")
POD_KEY_ENV = Edit(
    ("backends/kubernetes/manifests.py", *KUBE_FILES),
    r"^def pod_manifest\(",
    "def _breakage_pod_manifest(",
    """

def pod_manifest(*args, **kwargs):  # a deliberate breakage: the HMAC key in the pod's env
    import json as _json

    pod = _breakage_pod_manifest(*args, **kwargs)
    spec = next(a for a in list(args) + list(kwargs.values()) if hasattr(a, "files"))
    for content in spec.files.values():
        try:
            key = _json.loads(content).get("key")
        except (ValueError, AttributeError, UnicodeDecodeError):
            continue
        if key:
            for container in pod["spec"]["containers"]:
                container.setdefault("env", []).append({"name": "JPY_SESSION_KEY", "value": key})
    return pod
""",
)

#: a refusal that comes after a container was made (and removed): nothing is left afterwards
START_THEN_REFUSE = Edit(
    ("permissions.py", "permissions/*.py"),
    r"^def check_permission\(",
    "def _breakage_check_permission(",
    """

def check_permission(identity, config):  # a deliberate breakage: start first, refuse after
    try:
        return _breakage_check_permission(identity, config)
    except PermissionError:
        if hasattr(config, "image"):  # an execution config (not a shared part)
            import docker as _docker

            from jupyter_dss_containers import ownership as _ownership

            client = _docker.from_env()
            image = client.images.list(name="dss-containers/base-default")[0].id
            labels = _ownership.workload_labels("kernel", config.name, identity.username or "-")
            container = client.containers.create(image, ["true"], labels=labels)
            container.start()
            container.remove(force=True)
        raise
""",
)

SECURE_DEFAULTS = "tests/test_kernel_docker.py::test_secure_defaults"
BREAKAGES = (
    Breakage(
        "pod-env-key",
        "Kubernetes: the kernel's HMAC key in the pod's environment",
        (POD_KEY_ENV,),
        (
            "tests/test_kubernetes.py::test_kernel_runs_in_a_pod_with_the_config_limits",
            "tests/test_kube_manifests.py::"
            "test_private_files_are_in_the_secret_and_mounted_read_only_never_in_the_pod",
            "tests/test_api_isolation.py::"
            "test_a_pod_manifest_carries_no_private_file_but_its_secret_does",
        ),
    ),
    Breakage(
        "privileged-root-kernel",
        "kernel containers privileged, cap_add [SYS_ADMIN, NET_RAW], user 0:0 (this engine, "
        "itself without every capability, refuses to start a privileged root container: "
        "'unable to apply caps'; the three parts below run on their own and start)",
        (
            docker_create(
                f"{KERNEL_ONLY}\n    kw.update(privileged=True, cap_add=['SYS_ADMIN', 'NET_RAW'])\n"
                + ROOT_USER
            ),
        ),
        (SECURE_DEFAULTS,),
    ),
    Breakage(
        "privileged-kernel",
        "kernel containers privileged (only)",
        (docker_create(f"{KERNEL_ONLY}\n    kw['privileged'] = True"),),
        (SECURE_DEFAULTS,),
    ),
    Breakage(
        "cap-add-kernel",
        "kernel containers with cap_add [SYS_ADMIN, NET_RAW] (only)",
        (docker_create(f"{KERNEL_ONLY}\n    kw['cap_add'] = ['SYS_ADMIN', 'NET_RAW']"),),
        (SECURE_DEFAULTS,),
    ),
    Breakage(
        "root-kernel",
        'kernel containers run as user "0:0" (only)',
        (docker_create(ROOT_USER),),
        (SECURE_DEFAULTS,),
    ),
    Breakage(
        "writable-job-root",
        "job containers' root left writable under read_only_root",
        (docker_create("if kind == 'job':\n    kw['read_only'] = False"),),
        ("tests/test_hardening.py::test_python_job_on_a_read_only_root_returns_its_result",),
    ),
    Breakage(
        "start-then-refuse",
        "a refused config's container made and removed before the refusal",
        (START_THEN_REFUSE,),
        (
            "tests/test_kernel_docker.py::test_forbidden_config_is_refused_before_anything_starts",
            "tests/test_jobs.py::test_forbidden_config_is_refused_before_anything_starts",
            "tests/test_api_isolation.py::"
            "test_a_config_outside_the_callers_groups_is_refused_on_every_route",
        ),
    ),
    Breakage(
        "reattach-running-only",
        "the reattach owner check made for running kernels only (a stopped one's log quoted)",
        (
            Edit(
                ("provisioner.py", "provisioner/*.py"),
                r"\bif status\.state != \"missing\":",
                "if status.running:",
            ),
        ),
        (
            "tests/test_kernel_docker.py::"
            "test_reattach_to_a_stopped_kernel_is_refused_to_another_user_first",
        ),
    ),
    Breakage(
        "policy-after-pod",
        "Kubernetes: the kernel pod's NetworkPolicy made after the pod (its ports open a while)",
        (
            Edit(
                KUBE_FILES,
                r"^(\s*)await self\._create_network_policy\(namespace, policy\)",
                r"\1pass  # a deliberate breakage: the policy comes after the pod",
            ),
            Edit(
                KUBE_FILES,
                r"^(\s*)return await self\._call\(core\.create_namespaced_pod, (.*)\)$",
                r"\1pod = await self._call(core.create_namespaced_pod, \2)\n"
                r"\1if policy is not None:\n"
                r"\1    await self._create_network_policy(namespace, policy)\n"
                r"\1return pod",
            ),
        ),
        ("tests/test_kubernetes.py::test_read_only_pod_behind_its_network_policy",),
    ),
    Breakage(
        "user-limit-off",
        "the per-user job limit not applied (only the per-config one)",
        (
            Edit(
                ("jobs/*.py",),
                r"\bself\.max_jobs_per_user, self\.max_jobs_per_config\b",
                "10**6, self.max_jobs_per_config",
            ),
        ),
        ("tests/test_load.py::test_twenty_kernels_and_twenty_jobs_from_four_users",),
    ),
    Breakage(
        "pool-key",
        "pooled kernels share one HMAC key",
        (
            Edit(
                ("pool.py", "pool/*.py"),
                r"\bkey=secrets\.token_(?:hex|bytes|urlsafe)\(\d*\)(?:\.encode\(\))?",
                "key=_BREAKAGE_SHARED_KEY",
                "\n\n_BREAKAGE_SHARED_KEY = secrets.token_hex(32).encode()  # a breakage\n",
            ),
        ),
        ("tests/test_pool.py::test_pooled_kernel_is_handed_over_once_then_refilled",),
    ),
)


def scratch_copy() -> Path:
    """The package and the tests in a fresh folder (no caches, no build outputs)."""
    work = Path(tempfile.mkdtemp(prefix="dss-breakage-"))
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "artifacts", ".pytest_cache")
    shutil.copytree(REPO / PACKAGE, work / PACKAGE, ignore=ignore)
    shutil.copytree(REPO / "tests", work / "tests", ignore=ignore)
    for name in ("setup.cfg", "pyproject.toml"):
        shutil.copy(REPO / name, work / name)
    return work


def apply(work: Path, edit: Edit) -> list[str]:
    """Apply one edit; the files it changed (relative to the scratch copy)."""
    changed = []
    seen: set[Path] = set()
    for pattern in edit.candidates:
        for path in sorted((work / PACKAGE).glob(pattern)):
            if path in seen or not path.is_file():
                continue
            seen.add(path)
            text = path.read_text()
            new, count = re.subn(edit.pattern, edit.replacement, text, flags=re.MULTILINE)
            if count:
                path.write_text(new + edit.append)
                changed.append(str(path.relative_to(work)))
    return changed


def run_test(work: Path, test: str) -> tuple[str, str]:
    """("passed" | "failed" | "error", the first failure line) of one test id in ``work``."""
    env = dict(os.environ, PYTHONPATH=str(work))
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-x", test],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
    )
    out = result.stdout + result.stderr
    first = next((line[1:].strip() for line in out.splitlines() if line.startswith("E ")), "")
    if result.returncode == 0:
        return "passed", ""
    if result.returncode == 1 and re.search(r"\b\d+ failed\b", out):
        return "failed", first
    tail = out.strip().splitlines()[-1:] or ["?"]
    return f"error (rc {result.returncode})", first or tail[0]


def main(names: list[str]) -> int:
    chosen = [b for b in BREAKAGES if not names or b.name in names]
    if not chosen:
        print(f"no breakage named {names}; known: {[b.name for b in BREAKAGES]}")
        return 2
    rows: list[tuple[str, str, str]] = []
    bad = 0
    keep = os.environ.get("KEEP") == "1"
    baseline = scratch_copy()
    for test in dict.fromkeys(t for b in chosen for t in b.tests):
        result, line = run_test(baseline, test)
        rows.append(("(none: the unbroken copy)", test, result + (f": {line}" if line else "")))
        bad += result != "passed"
        print(" | ".join(rows[-1]), flush=True)
    if not keep:
        shutil.rmtree(baseline, ignore_errors=True)
    for breakage in chosen:
        work = scratch_copy()
        try:
            missing = [e.pattern for e in breakage.edits if not apply(work, e)]
            if missing:
                rows.append((breakage.name, "-", f"NOT APPLIED: no file holds {missing}"))
                bad += 1
                print(" | ".join(rows[-1]), flush=True)
                continue
            for test in breakage.tests:
                result, line = run_test(work, test)
                caught = result == "failed"
                verdict = "caught (failed)" if caught else f"NOT CAUGHT ({result})"
                rows.append((breakage.name, test, verdict + (f": {line}" if line else "")))
                bad += not caught
                print(" | ".join(rows[-1]), flush=True)
        finally:
            if keep:
                print(f"    (kept {work})")
            else:
                shutil.rmtree(work, ignore_errors=True)
    print()
    print("| breakage | test | result |")
    print("|---|---|---|")
    for breakage, test, result in rows:
        print(f"| {breakage} | `{test.removeprefix('tests/')}` | {result.replace('|', '/')} |")
    print()
    print("what each breakage does:")
    for b in chosen:
        print(f"  {b.name}: {b.what}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
