"""Pod Security Admission, as the API server's built-in plugin enforces it: a namespace
labelled ``pod-security.kubernetes.io/enforce: baseline|restricted`` refuses pods that
break that Pod Security Standard, with the plugin's own message::

    pods "x" is forbidden: violates PodSecurity "restricted:latest": allowPrivilegeEscalation
    != false (container "x" must set securityContext.allowPrivilegeEscalation=false), ...

The checks run in the plugin's order (baseline checks, then restricted ones, each sorted by
their ID; a restricted check replaces the baseline one it overrides). Covered: host
namespaces, hostPath volumes, host ports, privileged, capabilities, procMount, seccomp
(fields; not the old annotations), and at ``restricted`` also allowPrivilegeEscalation,
volume types, runAsNonRoot, runAsUser=0. Not covered: AppArmor, SELinux options, sysctls,
Windows pods, the per-version differences (every version is judged as ``latest``), and the
``warn``/``audit`` modes (answer headers and audit events). Pure functions.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

ENFORCE = "pod-security.kubernetes.io/enforce"
ENFORCE_VERSION = "pod-security.kubernetes.io/enforce-version"
LEVELS = ("privileged", "baseline", "restricted")

#: what baseline lets a container add
BASELINE_CAPABILITIES = {
    "AUDIT_WRITE", "CHOWN", "DAC_OVERRIDE", "FOWNER", "FSETID", "KILL", "MKNOD",
    "NET_BIND_SERVICE", "SETFCAP", "SETGID", "SETPCAP", "SETUID", "SYS_CHROOT",
}  # fmt: skip
#: the volume types restricted allows
ALLOWED_VOLUMES = (
    "configMap", "csi", "downwardAPI", "emptyDir", "ephemeral", "image",
    "persistentVolumeClaim", "projected", "secret",
)  # fmt: skip

Result = tuple[str, str] | None  # (reason, detail) of a refusal, or None


def _plural(singular: str, plural: str, n: int) -> str:
    return singular if n == 1 else plural


def _quoted(items: list[str] | set[str]) -> str:
    return ", ".join(f'"{i}"' for i in (sorted(items) if isinstance(items, set) else items))


def _containers(spec: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Init, regular, then ephemeral containers (the plugin's visiting order)."""
    for field in ("initContainers", "containers", "ephemeralContainers"):
        yield from spec.get(field) or []


def _sc(c: dict[str, Any]) -> dict[str, Any]:
    return c.get("securityContext") or {}


def _named(names: list[str]) -> str:
    return f"{_plural('container', 'containers', len(names))} {_quoted(names)}"


# --------------------------------------------------------------------------- baseline


def _capabilities_baseline(spec: dict[str, Any]) -> Result:
    bad, added = [], set()
    for c in _containers(spec):
        extra = {a for a in (_sc(c).get("capabilities") or {}).get("add") or []}
        extra -= BASELINE_CAPABILITIES
        if extra:
            bad.append(c["name"])
            added |= extra
    if not bad:
        return None
    detail = f"{_named(bad)} must not include {_quoted(added)} in securityContext.capabilities.add"
    return "non-default capabilities", detail


def _host_namespaces(spec: dict[str, Any]) -> Result:
    used = [f"{f}=true" for f in ("hostNetwork", "hostPID", "hostIPC") if spec.get(f) is True]
    return ("host namespaces", ", ".join(used)) if used else None


def _host_path_volumes(spec: dict[str, Any]) -> Result:
    bad = [v["name"] for v in spec.get("volumes") or [] if "hostPath" in v]
    if not bad:
        return None
    return "hostPath volumes", f"{_plural('volume', 'volumes', len(bad))} {_quoted(bad)}"


def _host_ports(spec: dict[str, Any]) -> Result:
    bad, ports = [], set()
    for c in _containers(spec):
        used = {str(p["hostPort"]) for p in c.get("ports") or [] if p.get("hostPort")}
        if used:
            bad.append(c["name"])
            ports |= used
    if not bad:
        return None
    detail = (
        f"{_named(bad)} {_plural('uses', 'use', len(bad))} "
        f"{_plural('hostPort', 'hostPorts', len(ports))} {', '.join(sorted(ports))}"
    )
    return "hostPort", detail


def _privileged(spec: dict[str, Any]) -> Result:
    bad = [c["name"] for c in _containers(spec) if _sc(c).get("privileged") is True]
    if not bad:
        return None
    return "privileged", f"{_named(bad)} must not set securityContext.privileged=true"


def _proc_mount(spec: dict[str, Any]) -> Result:
    bad, kinds = [], set()
    for c in _containers(spec):
        mount = _sc(c).get("procMount")
        if mount is not None and mount != "Default":
            bad.append(c["name"])
            kinds.add(mount)
    if not bad:
        return None
    return "procMount", f"{_named(bad)} must not set securityContext.procMount to {_quoted(kinds)}"


def _seccomp_setters(spec: dict[str, Any]) -> tuple[list[str], set[str], list[str], bool]:
    """(explicitly bad setters, bad values, containers with no profile, pod sets a good one)."""
    valid = ("RuntimeDefault", "Localhost")
    setters, values = [], set()
    pod_profile = (spec.get("securityContext") or {}).get("seccompProfile")
    pod_ok = False
    if pod_profile is not None:
        if pod_profile.get("type") in valid:
            pod_ok = True
        else:
            setters.append("pod")
            values.add(pod_profile.get("type", ""))
    explicit, implicit = [], []
    for c in _containers(spec):
        profile = _sc(c).get("seccompProfile")
        if profile is None:
            implicit.append(c["name"])
        elif profile.get("type") not in valid:
            explicit.append(c["name"])
            values.add(profile.get("type", ""))
    if explicit:
        setters.append(_named(explicit))
    return setters, values, implicit, pod_ok


def _seccomp_baseline(spec: dict[str, Any]) -> Result:
    setters, values, _, _ = _seccomp_setters(spec)
    if not setters:
        return None
    detail = f"{' and '.join(setters)} must not set securityContext.seccompProfile.type to"
    return "seccompProfile", f"{detail} {_quoted(values)}"


# --------------------------------------------------------------------------- restricted


def _allow_privilege_escalation(spec: dict[str, Any]) -> Result:
    bad = [
        c["name"] for c in _containers(spec) if _sc(c).get("allowPrivilegeEscalation") is not False
    ]
    if not bad:
        return None
    detail = f"{_named(bad)} must set securityContext.allowPrivilegeEscalation=false"
    return "allowPrivilegeEscalation != false", detail


def _capabilities_restricted(spec: dict[str, Any]) -> Result:
    no_drop, adding, added = [], [], set()
    for c in _containers(spec):
        caps = _sc(c).get("capabilities")
        if caps is None or "ALL" not in (caps.get("drop") or []):
            no_drop.append(c["name"])
        extra = {a for a in (caps or {}).get("add") or [] if a != "NET_BIND_SERVICE"}
        if extra:
            adding.append(c["name"])
            added |= extra
    details = []
    if no_drop:
        details.append(f'{_named(no_drop)} must set securityContext.capabilities.drop=["ALL"]')
    if adding:
        where = "in securityContext.capabilities.add"
        details.append(f"{_named(adding)} must not include {_quoted(added)} {where}")
    return ("unrestricted capabilities", "; ".join(details)) if details else None


def _restricted_volumes(spec: dict[str, Any]) -> Result:
    bad, kinds = [], set()
    for v in spec.get("volumes") or []:
        if any(t in v for t in ALLOWED_VOLUMES):
            continue
        bad.append(v["name"])
        kinds.add(next((k for k in v if k != "name"), "unknown"))
    if not bad:
        return None
    detail = (
        f"{_plural('volume', 'volumes', len(bad))} {_quoted(bad)} "
        f"{_plural('uses', 'use', len(bad))} "
        f"{_plural('restricted volume type', 'restricted volume types', len(kinds))} "
        f"{_quoted(kinds)}"
    )
    return "restricted volume types", detail


def _run_as_non_root(spec: dict[str, Any]) -> Result:
    setters: list[str] = []
    pod_value = (spec.get("securityContext") or {}).get("runAsNonRoot")
    if pod_value is False:
        setters.append("pod")
    explicit, implicit = [], []
    for c in _containers(spec):
        value = _sc(c).get("runAsNonRoot")
        if value is False:
            explicit.append(c["name"])
        elif value is None and pod_value is not True:
            implicit.append(c["name"])
    if explicit:
        setters.append(_named(explicit))
    if setters:
        detail = f"{' and '.join(setters)} must not set securityContext.runAsNonRoot=false"
        return "runAsNonRoot != true", detail
    if implicit:
        detail = f"pod or {_named(implicit)} must set securityContext.runAsNonRoot=true"
        return "runAsNonRoot != true", detail
    return None


def _run_as_user(spec: dict[str, Any]) -> Result:
    setters = ["pod"] if (spec.get("securityContext") or {}).get("runAsUser") == 0 else []
    bad = [c["name"] for c in _containers(spec) if _sc(c).get("runAsUser") == 0]
    if bad:
        setters.append(_named(bad))
    return ("runAsUser=0", f"{' and '.join(setters)} must not set runAsUser=0") if setters else None


def _seccomp_restricted(spec: dict[str, Any]) -> Result:
    setters, values, implicit, pod_ok = _seccomp_setters(spec)
    if setters:
        detail = f"{' and '.join(setters)} must not set securityContext.seccompProfile.type to"
        return "seccompProfile", f"{detail} {_quoted(values)}"
    if implicit and not pod_ok:
        detail = (
            f"pod or {_named(implicit)} must set securityContext.seccompProfile.type to "
            '"RuntimeDefault" or "Localhost"'
        )
        return "seccompProfile", detail
    return None


Check = Callable[[dict[str, Any]], Result]
#: (ID, check) in the plugin's order: IDs sorted within each level
BASELINE: list[tuple[str, Check]] = [
    ("capabilities_baseline", _capabilities_baseline),
    ("hostNamespaces", _host_namespaces),
    ("hostPathVolumes", _host_path_volumes),
    ("hostPorts", _host_ports),
    ("privileged", _privileged),
    ("procMount", _proc_mount),
    ("seccompProfile_baseline", _seccomp_baseline),
]
RESTRICTED: list[tuple[str, Check]] = [
    ("allowPrivilegeEscalation", _allow_privilege_escalation),
    ("capabilities_restricted", _capabilities_restricted),
    ("restrictedVolumes", _restricted_volumes),
    ("runAsNonRoot", _run_as_non_root),
    ("runAsUser", _run_as_user),
    ("seccompProfile_restricted", _seccomp_restricted),
]
#: baseline checks a restricted one replaces
OVERRIDDEN = {"capabilities_baseline", "hostPathVolumes", "seccompProfile_baseline"}


def policy(namespace: dict[str, Any]) -> tuple[str, str]:
    """(level, version) a namespace enforces; an unknown level is judged as restricted,
    as the plugin fails closed."""
    labels = namespace.get("metadata", {}).get("labels") or {}
    level = labels.get(ENFORCE, "privileged")
    if level not in LEVELS:
        level = "restricted"
    return level, labels.get(ENFORCE_VERSION) or "latest"


def violations(level: str, spec: dict[str, Any]) -> list[tuple[str, str]]:
    """(reason, detail) of every check of ``level`` the pod spec fails, in order."""
    if level == "privileged":
        return []
    checks = [(i, c) for i, c in BASELINE if level == "baseline" or i not in OVERRIDDEN]
    if level == "restricted":
        checks += RESTRICTED
    return [r for _, check in checks if (r := check(spec)) is not None]


def refusal(namespace: dict[str, Any], pod: dict[str, Any]) -> str | None:
    """The admission message (after ``pods "x" is forbidden: ``), or None when admitted."""
    level, version = policy(namespace)
    found = violations(level, pod.get("spec") or {})
    if not found:
        return None
    parts = [f"{reason} ({detail})" if detail else reason for reason, detail in found]
    return f'violates PodSecurity "{level}:{version}": {", ".join(parts)}'
