"""What a real kubelet gives every pod to reach the API server: ``KUBERNETES_SERVICE_HOST``
and ``KUBERNETES_SERVICE_PORT``, and (unless ``automountServiceAccountToken: false`` on
the pod) its service account's token with the cluster's ``ca.crt`` and the pod's
``namespace``, read-only at :data:`MOUNT` (the projected ``kube-api-access`` volume).
Only on a cluster serving HTTPS (``FakeCluster(tls=True)``): the others' pods get nothing."""

from __future__ import annotations

import os
import tempfile
from typing import Any

from .rbac import Rbac

MOUNT = "/var/run/secrets/kubernetes.io/serviceaccount"


class PodIdentity:
    """Writes each pod's token folder; says what the kubelet binds and sets."""

    def __init__(self, rbac: Rbac, ca_pem: bytes, host: str, port: int, folders: list[str]):
        self.rbac, self.ca_pem, self.host, self.port = rbac, ca_pem, host, port
        self.folders = folders  # the kubelet's, removed with its pods' at stop
        #: pod (namespace, name) -> the token it was given
        self.given: dict[tuple[str, str], str] = {}

    def for_pod(self, pod: dict[str, Any]) -> tuple[dict[str, dict[str, str]], dict[str, str]]:
        """(binds, environment) for the pod's container (blocking file I/O: in a thread)."""
        env = {"KUBERNETES_SERVICE_HOST": self.host, "KUBERNETES_SERVICE_PORT": str(self.port)}
        spec, meta = pod["spec"], pod["metadata"]
        if spec.get("automountServiceAccountToken") is False:
            return {}, env
        account = spec.get("serviceAccountName") or "default"
        token = self.rbac.issue(meta["namespace"], account)
        self.given[(meta["namespace"], meta["name"])] = token
        folder = tempfile.mkdtemp(prefix="fake-kube-sa-")
        self.folders.append(folder)
        for name, data in (
            ("token", token.encode()),
            ("ca.crt", self.ca_pem),
            ("namespace", meta["namespace"].encode()),
        ):
            with open(os.path.join(folder, name), "wb") as f:
                f.write(data)
            os.chmod(os.path.join(folder, name), 0o644)  # defaultMode 420, as projected
        os.chmod(folder, 0o755)
        return {folder: {"bind": MOUNT, "mode": "ro"}}, env
