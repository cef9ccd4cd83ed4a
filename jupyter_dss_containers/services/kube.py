"""What a model service is on Kubernetes, as pure manifest builders (no cluster I/O yet).

Per version: a Deployment of replicas (readiness on ``/v2/health/ready``, so a Service
sends traffic to loaded pods only), a ClusterIP Service, and a HorizontalPodAutoscaler
when ``autoscale: {min, max, target_cpu}`` is given. In front: the same stdlib router as on
Docker, as its own Deployment and Service, whose config names each version's Service
(the cluster spreads over that version's pods; the router applies the weights and
retries). The serving code comes from a ConfigMap, the model bytes from a Secret (so at
most about 1 MiB of model: a larger one needs a volume, not built yet).

Pods are hardened like the backend's: non-root 1000:100, no privilege escalation, every
capability dropped, read-only root, RuntimeDefault seccomp, no service-account token.
"""

from __future__ import annotations

import base64
import copy
import json
from typing import Any

from ..backends.kubernetes.manifests import label_values, on_registry
from ..config import ExecutionConfig
from ..imagecontract import IMAGE_GID, IMAGE_UID, KERNEL_PYTHON
from . import spec

APP = "dss-containers.jupyter.org/app"


def _meta(name: str, namespace: str, labels: dict[str, str]) -> dict[str, Any]:
    return {"name": name, "namespace": namespace, "labels": label_values(labels)}


def _selector(sid: str, version: str | None) -> dict[str, str]:
    return {spec.SERVICE_ID: sid, APP: f"v-{version}" if version else "router"}


def code_configmap(owner: str, name: str, config: str, namespace: str) -> dict[str, Any]:
    sid = spec.service_id(owner, name)
    files = {k.split("/", 1)[1]: v.decode() for k, v in spec.runtime_sources().items()}
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": _meta(
            f"dss-svc-{sid}-code", namespace, spec.labels(spec.ROUTER, owner, name, config)
        ),
        "data": files,
    }


def model_secret(
    owner: str,
    name: str,
    config: str,
    version: str,
    model: bytes,
    meta: dict[str, Any],
    namespace: str,
) -> dict[str, Any]:
    sid = spec.service_id(owner, name)
    data = {"model.pkl": model, "meta.json": json.dumps(meta).encode()}
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": "Opaque",
        "metadata": _meta(
            spec.volume_name(sid, version),
            namespace,
            spec.labels(spec.REPLICA, owner, name, config, version),
        ),
        "data": {k: base64.b64encode(v).decode() for k, v in data.items()},
    }


def _container(
    config: ExecutionConfig, image: str, module: str, env: dict[str, str], mounts: list
) -> dict:
    settings = config.kubernetes
    probe = {"httpGet": {"path": "/v2/health/ready", "port": spec.PORT}, "periodSeconds": 2}
    return {
        "name": "serve",
        "image": on_registry(image, config.registry),
        "imagePullPolicy": settings.image_pull_policy,
        "command": [KERNEL_PYTHON, "-m", f"dss_serving.{module}"],
        "env": [{"name": k, "value": v} for k, v in env.items()],
        "ports": [{"containerPort": spec.PORT, "protocol": "TCP"}],
        "resources": copy.deepcopy(settings.resources),
        "readinessProbe": probe,
        "livenessProbe": {
            "httpGet": {"path": "/v2/health/live", "port": spec.PORT},
            "periodSeconds": 10,
        },
        "volumeMounts": mounts,
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "capabilities": {"drop": ["ALL"]},
            "readOnlyRootFilesystem": True,
        },
    }


def _deployment(
    name: str,
    namespace: str,
    labels: dict[str, str],
    selector: dict[str, str],
    replicas: int,
    pod: dict,
) -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": _meta(name, namespace, labels),
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": label_values(selector)},
            "strategy": {
                "type": "RollingUpdate",
                "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1},
            },
            "template": {"metadata": {"labels": label_values({**labels, **selector})}, "spec": pod},
        },
    }


def _pod(config: ExecutionConfig, container: dict, volumes: list) -> dict[str, Any]:
    settings = config.kubernetes
    pod: dict[str, Any] = {
        "automountServiceAccountToken": False,
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": IMAGE_UID,
            "runAsGroup": IMAGE_GID,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "containers": [container],
        "volumes": [
            {"name": "tmp", "emptyDir": {"medium": "Memory", "sizeLimit": "64Mi"}},
            *volumes,
        ],
    }
    if settings.node_selector:
        pod["nodeSelector"] = dict(settings.node_selector)
    if settings.tolerations:
        pod["tolerations"] = copy.deepcopy(list(settings.tolerations))
    if settings.image_pull_secrets:
        pod["imagePullSecrets"] = [{"name": n} for n in settings.image_pull_secrets]
    return pod


def version_deployment(
    config: ExecutionConfig,
    image: str,
    owner: str,
    name: str,
    version: str,
    replicas: int,
    namespace: str,
) -> dict[str, Any]:
    sid = spec.service_id(owner, name)
    env = {"PYTHONPATH": spec.MOUNT, "OMP_NUM_THREADS": "1", "DSS_SERVICE_NAME": name}
    env |= {"DSS_SERVICE_VERSION": version, "DSS_MODEL_DIR": f"{spec.MOUNT}/model"}
    mounts = [
        {"name": "tmp", "mountPath": "/tmp"},
        {"name": "code", "mountPath": f"{spec.MOUNT}/dss_serving", "readOnly": True},
        {"name": "model", "mountPath": f"{spec.MOUNT}/model", "readOnly": True},
    ]
    volumes = [
        {"name": "code", "configMap": {"name": f"dss-svc-{sid}-code"}},
        {
            "name": "model",
            "secret": {"secretName": spec.volume_name(sid, version), "defaultMode": 0o440},
        },
    ]
    pod = _pod(config, _container(config, image, "runtime", env, mounts), volumes)
    pod["securityContext"]["fsGroup"] = IMAGE_GID  # the Secret's files readable by the group
    labels = spec.labels(spec.REPLICA, owner, name, config.name, version)
    return _deployment(
        spec.volume_name(sid, version),
        namespace,
        labels,
        _selector(sid, version),
        replicas,
        pod,
    )


def router_deployment(
    config: ExecutionConfig, image: str, owner: str, name: str, namespace: str
) -> dict[str, Any]:
    """One router pod; its config (pushed like on Docker) lives in an emptyDir."""
    sid = spec.service_id(owner, name)
    env = {"PYTHONPATH": spec.MOUNT, "DSS_ROUTER_STATE": "/tmp"}
    mounts = [
        {"name": "tmp", "mountPath": "/tmp"},
        {"name": "code", "mountPath": f"{spec.MOUNT}/dss_serving", "readOnly": True},
    ]
    container = _container(config, image, "router", env, mounts)
    container["env"].append(
        {
            "name": "DSS_ROUTER_ADMIN_TOKEN",
            "valueFrom": {"secretKeyRef": {"name": f"dss-svc-{sid}-admin", "key": "token"}},
        }
    )
    container["readinessProbe"]["httpGet"]["path"] = "/v2/health/live"
    pod = _pod(config, container, [{"name": "code", "configMap": {"name": f"dss-svc-{sid}-code"}}])
    labels = spec.labels(spec.ROUTER, owner, name, config.name)
    return _deployment(spec.router_name(sid), namespace, labels, _selector(sid, None), 1, pod)


def admin_secret(owner: str, name: str, config: str, token: str, namespace: str) -> dict[str, Any]:
    sid = spec.service_id(owner, name)
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": "Opaque",
        "metadata": _meta(
            f"dss-svc-{sid}-admin", namespace, spec.labels(spec.ROUTER, owner, name, config)
        ),
        "data": {"token": base64.b64encode(token.encode()).decode()},
    }


def service(
    owner: str, name: str, config: str, version: str | None, namespace: str
) -> dict[str, Any]:
    """A ClusterIP Service for a version's pods (or the router's, ``version`` None)."""
    sid = spec.service_id(owner, name)
    kind = spec.REPLICA if version else spec.ROUTER
    object_name = spec.volume_name(sid, version)
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _meta(object_name, namespace, spec.labels(kind, owner, name, config, version)),
        "spec": {
            "type": "ClusterIP",
            "selector": label_values(_selector(sid, version)),
            "ports": [
                {"name": "http", "port": spec.PORT, "targetPort": spec.PORT, "protocol": "TCP"}
            ],
        },
    }


def autoscaler(deployment: dict[str, Any], autoscale: dict[str, Any]) -> dict[str, Any]:
    """``autoscale: {min, max, target_cpu}`` as an autoscaling/v2 HorizontalPodAutoscaler."""
    low, high, cpu = autoscale.get("min", 1), autoscale.get("max"), autoscale.get("target_cpu", 70)
    for key, value in (("min", low), ("max", high), ("target_cpu", cpu)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise spec.SpecError(f"autoscale.{key} must be a whole number >= 1, not {value!r}")
    if high < low:
        raise spec.SpecError(f"autoscale.max ({high}) is below autoscale.min ({low})")
    meta = deployment["metadata"]
    return {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": {
            "name": meta["name"],
            "namespace": meta["namespace"],
            "labels": dict(meta["labels"]),
        },
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": meta["name"]},
            "minReplicas": low,
            "maxReplicas": high,
            "metrics": [
                {
                    "type": "Resource",
                    "resource": {
                        "name": "cpu",
                        "target": {"type": "Utilization", "averageUtilization": cpu},
                    },
                }
            ],
        },
    }


def router_config(
    owner: str, name: str, versions: list[spec.VersionSpec], key_hashes: list[str], namespace: str
) -> dict:
    """The router's config on a cluster: one address per version, its Service."""
    sid = spec.service_id(owner, name)
    return {
        "service": name,
        "versions": {
            v.version: {
                "weight": v.weight,
                "replicas": [f"{spec.volume_name(sid, v.version)}.{namespace}.svc:{spec.PORT}"],
            }
            for v in versions
        },
        "keys": list(key_hashes),
    }
