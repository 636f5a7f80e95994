"""The one exception the endpoints raise for a request they refuse."""

from __future__ import annotations


class HTTPError(Exception):
    """Answer with ``status``, the body ``{"error": message}`` and any extra ``headers``."""

    def __init__(self, status: int, message: str, headers: list[tuple[bytes, bytes]] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers or []


def bad_request(message: str) -> HTTPError:
    return HTTPError(400, message)


def not_found(message: str) -> HTTPError:
    return HTTPError(404, message)
