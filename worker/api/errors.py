"""The one exception the endpoints raise for a request they refuse."""

from __future__ import annotations


class HTTPError(Exception):
    """Answer with ``status`` and the body ``{"error": message}``."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def bad_request(message: str) -> HTTPError:
    return HTTPError(400, message)


def not_found(message: str) -> HTTPError:
    return HTTPError(404, message)
