"""What a container kernel is told so that web apps it starts build their URLs through
the proxy route (``<base_url>/dss-containers/proxy/<kernel_id>/<port>/``).

Pure: :func:`proxy_env` builds the variables from the server's base URL and the kernel's
id; :func:`server_base_url` finds the base URL up a provisioner's parent chain (the
kernel manager's parent is the server). Outside a server (nbclient, papermill) there is no
route, and no variable is set.
"""

from __future__ import annotations

from typing import Any

#: the route's prefix, relative to the server's base URL (also in server/proxy.py)
PROXY_PREFIX = "dss-containers/proxy"
#: Dash's default port: its DASH_REQUESTS_PATHNAME_PREFIX names the port it is served on
DASH_PORT = 8050


def proxy_prefix(base_url: str, kernel_id: str) -> str:
    """``<base_url>dss-containers/proxy/<kernel_id>/`` (absolute path, trailing slash)."""
    base = "/" + base_url.strip("/") + "/" if base_url.strip("/") else "/"
    return f"{base}{PROXY_PREFIX}/{kernel_id}/"


def proxy_env(base_url: str, kernel_id: str) -> dict[str, str]:
    """The variables web apps read to know the path they are served under.

    - ``DSS_CONTAINERS_PROXY_PREFIX``: the kernel's prefix, a port and ``/`` go after it;
    - ``TENSORBOARD_PROXY_URL``: read by TensorBoard's ``%tensorboard`` magic (``%PORT%``
      is replaced by the port TensorBoard runs on);
    - ``DASH_REQUESTS_PATHNAME_PREFIX``: Dash's URL prefix for what the browser requests,
      for Dash's default port 8050 (its routes stay at ``/``: the proxy strips the prefix);
    - ``STREAMLIT_SERVER_HEADLESS``: Streamlit serves without asking questions or opening a
      browser; its own base path stays unset (the proxy strips the prefix and Streamlit's
      page finds its endpoints relative to its own URL).
    Bokeh/Panel need no variable: the proxy presents the app's own origin
    (``localhost:<port>``), which Bokeh's default websocket allow-list accepts.
    """
    prefix = proxy_prefix(base_url, kernel_id)
    return {
        "DSS_CONTAINERS_KERNEL_ID": kernel_id,
        "DSS_CONTAINERS_PROXY_PREFIX": prefix,
        "TENSORBOARD_PROXY_URL": f"{prefix}%PORT%/",
        "DASH_REQUESTS_PATHNAME_PREFIX": f"{prefix}{DASH_PORT}/",
        "STREAMLIT_SERVER_HEADLESS": "true",
    }


def server_base_url(configurable: Any) -> str | None:
    """The base URL of the Jupyter server up ``configurable``'s parent chain, or None."""
    seen, hops = configurable, 0
    while seen is not None and hops < 10:
        base_url = getattr(seen, "base_url", None)
        if isinstance(base_url, str) and hasattr(seen, "web_app"):
            return base_url
        seen, hops = getattr(seen, "parent", None), hops + 1
    return None


def proxy_variables(provisioner: Any) -> dict[str, str]:
    """:func:`proxy_env` for a provisioner's kernel, empty outside a Jupyter server."""
    base_url = server_base_url(provisioner)
    kernel_id = getattr(provisioner, "kernel_id", None)
    if base_url is None or not kernel_id:
        return {}
    return proxy_env(base_url, str(kernel_id))
