"""The one error of model services, with the HTTP status it answers with."""

from __future__ import annotations


class ServiceError(Exception):
    """A refusal or failure with its HTTP status (404 uniform for missing and not yours)."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status


def not_found(name: str) -> ServiceError:
    shown = name if len(name) <= 64 and name.isascii() and name.isprintable() else "?"
    return ServiceError(f"Service does not exist: {shown}", 404)
