"""The REST API under ``<base_url>/dss-containers/api/``, one module per resource.

:mod:`.base` holds what every route shares (config file, caller, JSON body and limits,
errors); :mod:`.configs`, :mod:`.kernels`, :mod:`.images` and :mod:`.jobs` the routes of
each resource with the view models that describe it. :data:`HANDLERS` wires them to URLs.
"""

from __future__ import annotations

from .base import API_PREFIX, WHOLE_NUMBER_ARGUMENTS, DSSAPIHandler, api_error, bounded
from .configs import (
    MAX_TEST_TIMEOUT,
    TEST_TIMEOUT,
    ConfigHandler,
    ConfigsHandler,
    ConfigTestHandler,
    config_summary,
    resources_summary,
)
from .images import IMAGES_TIMEOUT, ImagesHandler, image_row
from .jobs import JobHandler, JobLogsHandler, JobsHandler, job_does_not_exist, job_row
from .kernels import (
    KERNEL_LOG_TAIL,
    LIVE_TIMEOUT,
    MAX_KERNEL_LOG_TAIL,
    KernelLogsHandler,
    KernelsHandler,
    kernel_row,
)
from .services import (
    ServiceHandler,
    ServiceKeyHandler,
    ServiceKeysHandler,
    ServiceLogsHandler,
    ServicesHandler,
    ServiceVersionHandler,
    ServiceVersionsHandler,
)

_NAME = r"(?P<name>[^/]+)"
_JOB = r"(?P<job_id>[^/]+)"
_KERNEL = r"(?P<kernel_id>[^/]+)"
_SERVICE = r"(?P<name>[^/]+)"

#: (pattern relative to the base URL, handler); the extension prepends the base URL
HANDLERS: list[tuple[str, type[DSSAPIHandler]]] = [
    (rf"{API_PREFIX}/configs/?", ConfigsHandler),
    (rf"{API_PREFIX}/configs/{_NAME}/test/?", ConfigTestHandler),
    (rf"{API_PREFIX}/configs/{_NAME}/?", ConfigHandler),
    (rf"{API_PREFIX}/kernels/?", KernelsHandler),
    (rf"{API_PREFIX}/kernels/{_KERNEL}/logs/?", KernelLogsHandler),
    (rf"{API_PREFIX}/images/?", ImagesHandler),
    (rf"{API_PREFIX}/jobs/?", JobsHandler),
    (rf"{API_PREFIX}/jobs/{_JOB}/logs/?", JobLogsHandler),
    (rf"{API_PREFIX}/jobs/{_JOB}/?", JobHandler),
    (rf"{API_PREFIX}/services/?", ServicesHandler),
    (rf"{API_PREFIX}/services/{_SERVICE}/versions/?", ServiceVersionsHandler),
    (rf"{API_PREFIX}/services/{_SERVICE}/versions/(?P<version>[^/]+)/?", ServiceVersionHandler),
    (rf"{API_PREFIX}/services/{_SERVICE}/keys/?", ServiceKeysHandler),
    (rf"{API_PREFIX}/services/{_SERVICE}/keys/(?P<key_id>[^/]+)/?", ServiceKeyHandler),
    (rf"{API_PREFIX}/services/{_SERVICE}/logs/?", ServiceLogsHandler),
    (rf"{API_PREFIX}/services/{_SERVICE}/?", ServiceHandler),
]

__all__ = [
    "API_PREFIX",
    "HANDLERS",
    "IMAGES_TIMEOUT",
    "KERNEL_LOG_TAIL",
    "LIVE_TIMEOUT",
    "MAX_KERNEL_LOG_TAIL",
    "MAX_TEST_TIMEOUT",
    "TEST_TIMEOUT",
    "WHOLE_NUMBER_ARGUMENTS",
    "ConfigHandler",
    "ConfigTestHandler",
    "ConfigsHandler",
    "DSSAPIHandler",
    "ImagesHandler",
    "JobHandler",
    "JobLogsHandler",
    "JobsHandler",
    "KernelLogsHandler",
    "KernelsHandler",
    "api_error",
    "bounded",
    "config_summary",
    "image_row",
    "job_does_not_exist",
    "job_row",
    "kernel_row",
    "resources_summary",
]
