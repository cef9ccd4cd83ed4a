"""The RBAC a Jupyter server needs to run workloads in one namespace: the rules, the
ServiceAccount / Role / RoleBinding manifest built from them (shipped as
``jupyter_dss_containers/resources/rbac.yaml``, printed by ``jupyter dss-containers rbac``)
and the checks ``doctor`` asks the cluster about (SelfSubjectAccessReviews).

One list, so that the manifest, the check and the backend cannot drift apart: each rule
names the calls of this package that need it. Creating SelfSubjectAccessReviews needs no
rule (every authenticated account may, through ``system:basic-user``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

#: the names the shipped manifest uses
SERVICE_ACCOUNT = "dss-containers"
ROLE = "dss-containers"
SHIPPED_NAMESPACE = "jupyter"


@dataclass(frozen=True)
class Rule:
    """One resource's verbs, and why the backend calls them."""

    group: str
    resource: str  # "pods/log" for a subresource
    verbs: tuple[str, ...]
    why: str
    #: False: the backend works without it (only a feature is lost); doctor does not ask
    required: bool = True
    #: only when the config has a NetworkPolicy per pod (``network_policy.enabled``)
    network_policy: bool = False


RULES: tuple[Rule, ...] = (
    Rule(
        "",
        "pods",
        ("create", "get", "list", "watch", "delete"),
        "start a workload, watch it run, read its IP and state, list for the reaper, stop it",
    ),
    Rule("", "pods/log", ("get",), "a job's output and result files; a failed start's log"),
    Rule(
        "",
        "secrets",
        ("create", "get", "list", "patch", "delete"),
        "a workload's private files (keys, job code); owned by its pod; reaped when left",
    ),
    Rule("", "events", ("list",), "why a pod is unschedulable (autoscaler verdicts)"),
    Rule("", "namespaces", ("get",), "doctor: the namespace exists (its own name only)"),
    Rule(
        "networking.k8s.io",
        "networkpolicies",
        ("create", "list", "patch", "delete"),
        "each workload's NetworkPolicy (only this server reaches its ports)",
        network_policy=True,
    ),
    Rule(
        "",
        "pods/portforward",
        ("create", "get"),
        "the proxy route to a web app in a kernel pod (TensorBoard); optional",
        required=False,
    ),
    Rule(
        "apps",
        "daemonsets",
        ("create", "get", "list", "patch", "delete"),
        "prepull's DaemonSet (the image onto every node), and the reaper's look at it; optional",
        required=False,
    ),
    Rule(
        "metrics.k8s.io",
        "pods",
        ("get",),
        "CPU and memory use shown in the panel (metrics-server); optional",
        required=False,
    ),
)


def checks(network_policy: bool = True) -> list[tuple[str, str, str]]:
    """(verb, group, resource) doctor asks about, in the manifest's order."""
    return [
        (verb, rule.group, rule.resource)
        for rule in RULES
        if rule.required and (network_policy or not rule.network_policy)
        for verb in rule.verbs
    ]


def role_rules(network_policy: bool = True) -> list[dict[str, Any]]:
    """The Role's ``rules`` (one per resource, as ``kubectl create role`` writes them)."""
    return [
        {"apiGroups": [rule.group], "resources": [rule.resource], "verbs": list(rule.verbs)}
        for rule in RULES
        if network_policy or not rule.network_policy
    ]


def manifests(
    namespace: str = SHIPPED_NAMESPACE,
    service_account: str = SERVICE_ACCOUNT,
    network_policy: bool = True,
) -> list[dict[str, Any]]:
    """ServiceAccount, Role and RoleBinding giving the server's pod what it needs in
    ``namespace`` (where the server pod runs and its workloads go)."""
    labels = {"app.kubernetes.io/name": "jupyter-dss-containers"}
    meta = {"namespace": namespace, "labels": labels}
    return [
        {
            "apiVersion": "v1",
            "kind": "ServiceAccount",
            "metadata": {"name": service_account, **meta},
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "Role",
            "metadata": {"name": ROLE, **meta},
            "rules": role_rules(network_policy),
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding",
            "metadata": {"name": ROLE, **meta},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": ROLE},
            "subjects": [
                {"kind": "ServiceAccount", "name": service_account, "namespace": namespace}
            ],
        },
    ]


def manifest_yaml(
    namespace: str = SHIPPED_NAMESPACE,
    service_account: str = SERVICE_ACCOUNT,
    network_policy: bool = True,
) -> str:
    """The manifest as ``kubectl apply -f`` takes it, each rule's reason as a comment."""
    import yaml

    header = (
        "# The Jupyter server's RBAC in one namespace (jupyter-dss-containers): exactly the\n"
        "# verbs the Kubernetes backend calls. Generated by `jupyter dss-containers rbac`.\n"
        "# Rules, in order:\n"
        + "".join(
            f"#   {r.group or 'core'} {r.resource}: {r.why}\n"
            for r in RULES
            if network_policy or not r.network_policy
        )
    )
    body = yaml.safe_dump_all(
        manifests(namespace, service_account, network_policy), sort_keys=False
    )
    return header + "---\n" + body


def denied_hint(namespace: str) -> str:
    """How to grant what doctor found missing."""
    return (
        f"grant them with: jupyter dss-containers rbac --namespace {namespace} | kubectl apply -f -"
    )
