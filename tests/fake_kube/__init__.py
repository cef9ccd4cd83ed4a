"""A small Kubernetes API server over real HTTP, with a kubelet on the local Docker engine.

It speaks enough of the core/v1 API for the official client, and answers as a real API
server does (the Kubernetes API reference and the apiserver's own behaviour): namespaces,
pods, secrets, persistent volume claims (bound at once, backed by host folders), resource
quotas, limit ranges, self-subject access reviews; lists and watches with set-based
label selectors and field selectors (400 for unsupported fields), an empty list in a
namespace that does not exist; watches from a resourceVersion; JSON Patch, JSON Merge
Patch and strategic merge patch; owner-reference garbage collection;
pod logs (followed too; 400 while the container waits to start), PodMetrics and graceful
deletes. Admission refuses in the real plugins' words: LimitRange, Pod Security Admission
on labelled namespaces, ResourceQuota, Secrets over 1 MiB, invalid names and labels.
NetworkPolicies (networking.k8s.io/v1) are stored, listed, patched and deleted, not
enforced. DaemonSets (apps/v1) run one pod per matching node; Nodes are listed. What it
does not do is listed in the README's Kubernetes section.

- :mod:`.api`: the HTTP routes and their answers, with the armed faults on every route;
- :mod:`.authn`: bearer tokens (401 ``Unauthorized`` for one the cluster does not know);
- :mod:`.rbac`: Roles and RoleBindings decide a service-account token's requests (403);
- :mod:`.tls`: the cluster's CA and the API server's certificate (``tls=True``: HTTPS);
- :mod:`.podidentity`: the token, ``ca.crt`` and namespace the kubelet mounts in a pod;
- :mod:`.store`: objects, namespaces and the event log watches replay;
- :mod:`.selectors`: label and field selectors, name and label validation;
- :mod:`.patch`: the three patch formats;
- :mod:`.validation`: what an update or a delete may not do;
- :mod:`.admission`: LimitRange, ResourceQuota and Secret-size refusals;
- :mod:`.podsecurity`: Pod Security Admission (baseline, restricted);
- :mod:`.garbage`: owner-reference garbage collection;
- :mod:`.podoutput`: pod logs and metrics;
- :mod:`.claims`: PersistentVolumeClaims, bound at once, backed by host folders;
- :mod:`.kubelet`: pods run on Docker, their status as a real kubelet reports it (and the
  scheduler's binding, on the first node whose labels match);
- :mod:`.events`: core/v1 Events, aggregated as the recorder does (``FailedScheduling``...);
- :mod:`.pulls`: image pulls that take time (per image, a test knob): ``Pulling`` / ``Pulled``;
- :mod:`.autoscaler`: a fake cluster-autoscaler, off by default: ``TriggeredScaleUp`` and a
  new node after a delay, or ``NotTriggerScaleUp``;
- :mod:`.nodes`: Node objects (list, get) with taints and the images they hold, and the
  placement rules (a pod's pin, taints) the scheduler and the DaemonSet controller share;
- :mod:`.daemonsets`: DaemonSets (apps/v1) and a controller that runs one pod per node;
- :mod:`.faults`: HTTP errors, dropped watches and 410 Gone a test can arm;
- :mod:`.server`: :class:`~.server.FakeCluster` (the whole) and ``write_kubeconfig``.
"""
