"""A small Kubernetes API server over real HTTP, with a kubelet on the local Docker engine.

It speaks enough of the core/v1 API for the official client: namespaces, pods, secrets,
resource quotas, limit ranges, self-subject access reviews, list with label and field
selectors, watches (chunked JSON lines from a resourceVersion), pod logs (followed too,
until the container exits), PodMetrics and graceful deletes. Secrets over 1 MiB are
refused, as the real API server refuses them. Quota and LimitRange refusals use the real
API server's wording. NetworkPolicies (networking.k8s.io/v1) are stored, listed and
deleted, not enforced.

- :mod:`.api`: the HTTP routes and their answers;
- :mod:`.store`: objects, namespaces and the event log watches replay;
- :mod:`.admission`: LimitRange, ResourceQuota and Secret-size refusals;
- :mod:`.kubelet`: pods run on Docker, their status as a real kubelet reports it;
- :mod:`.faults`: HTTP errors, dropped watches and 410 Gone a test can arm;
- :mod:`.server`: :class:`~.server.FakeCluster` (the whole) and ``write_kubeconfig``.
"""
