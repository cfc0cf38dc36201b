"""JSON responses shared by the HTTP-triggered functions."""

from __future__ import annotations

import json

import azure.functions as func


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
