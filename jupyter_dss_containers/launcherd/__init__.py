"""The trusted launcher: the one process that holds engine credentials and the config file.

Single-user servers and their kernels reach it through
:class:`jupyter_dss_containers.backends.remote.RemoteBackend`; it authenticates every call
(JupyterHub tokens, or a shared secret), applies the one permission check and the budgets,
builds the trusted parts of each workload itself, and removes a user's kernels and jobs when
their server stops. ``jupyter dss-containers launcher`` runs it (:mod:`.app`).
"""
