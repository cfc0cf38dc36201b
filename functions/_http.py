"""JSON responses and request helpers shared by the HTTP-triggered functions."""

from __future__ import annotations

import json

import azure.functions as func

ECHO_CHARS = 64  # how much of a caller's input an error message or a log line repeats


def json_response(body, status: int = 200) -> func.HttpResponse:
    """``body`` as ``application/json`` with ``status``."""
    return func.HttpResponse(json.dumps(body), status_code=status, mimetype="application/json")


def error_response(status: int, code: str, message: str, field: str | None = None, **extra) -> func.HttpResponse:
    """``{"error": {"code", "message"[, "field"]}, **extra}``: the error shape of every endpoint
    (``field`` names the bad request field or app setting)."""
    error = {"code": code, "message": message}
    if field:
        error["field"] = field
    return json_response({"error": error, **extra}, status)


def echo(value, limit: int = ECHO_CHARS) -> str:
    """``value`` fit to repeat in a message or a log line: at most ``limit`` characters of its text, lone
    surrogates and control characters escaped (so the line stays one line and encodes as UTF-8), and
    ``…`` when cut."""
    text = value if isinstance(value, str) else repr(value)
    cut = text[:limit]
    out = cut.encode("utf-8", "backslashreplace").decode("utf-8")
    out = "".join(ch if ch.isprintable() else ch.encode("unicode_escape").decode("ascii") for ch in out)
    return out + ("…" if len(text) > limit else "")


class BadBody(Exception):
    """The request body is not what the endpoint takes; ``str()`` is the message (field ``body``)."""


def json_body(req: func.HttpRequest, *, empty=None, max_bytes: int | None = None):
    """The body decoded as JSON; ``empty`` for an empty body. Raises :class:`BadBody` for a body over
    ``max_bytes``, not UTF-8, not JSON, or nested too deeply (Python's ``RecursionError``)."""
    raw = req.get_body() or b""
    if not raw:
        return empty
    if max_bytes is not None and len(raw) > max_bytes:
        raise BadBody(f"is {len(raw)} bytes; at most {max_bytes} are accepted")
    try:
        return json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise BadBody("is not UTF-8") from None
    except RecursionError:
        raise BadBody("is nested too deeply") from None
    except ValueError as exc:
        raise BadBody(f"is not JSON ({getattr(exc, 'msg', 'invalid')})") from None


def read_json(req: func.HttpRequest, *, max_bytes: int | None = None):
    """:func:`json_body` for endpoints that answer bad input with ``InvalidInput("body")`` (400):
    a body that is not UTF-8, not JSON or nested too deeply is never a 500."""
    from shared.errors import InvalidInput

    try:
        return json_body(req, max_bytes=max_bytes)
    except BadBody as exc:
        raise InvalidInput("body", str(exc)) from None
