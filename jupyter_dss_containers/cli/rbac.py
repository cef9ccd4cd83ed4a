"""``jupyter dss-containers rbac``: the ServiceAccount, Role and RoleBinding a server pod
needs in its namespace, for ``kubectl apply -f -`` (the shipped
``jupyter_dss_containers/resources/rbac.yaml`` is this command's output for the namespace
``jupyter``)."""

from __future__ import annotations

from traitlets import Bool, Unicode

from ..backends.kubernetes import rbac
from .base import DSSCommand


class RbacCommand(DSSCommand):
    description = (
        "Print the minimal ServiceAccount, Role and RoleBinding for a Jupyter server pod "
        "(exactly the verbs the Kubernetes backend calls)."
    )

    namespace = Unicode(
        rbac.SHIPPED_NAMESPACE,
        config=True,
        help="The namespace the server pod runs in and starts its workloads in.",
    )
    service_account = Unicode(
        rbac.SERVICE_ACCOUNT, config=True, help="The server pod's ServiceAccount name."
    )
    network_policy = Bool(
        True,
        config=True,
        help="Include the NetworkPolicy verbs (off when the configs set "
        "kubernetes.network_policy.enabled: false).",
    )
    aliases = {
        "namespace": "RbacCommand.namespace",
        "service-account": "RbacCommand.service_account",
    }
    flags = {
        "no-network-policy": (
            {"RbacCommand": {"network_policy": False}},
            "Leave out the NetworkPolicy verbs.",
        )
    }

    def run(self) -> None:
        print(rbac.manifest_yaml(self.namespace, self.service_account, self.network_policy), end="")
