"""Every error leaves the service as JSON: ``{"error": "...", "details": [...]}``, 4xx for bad input."""

from __future__ import annotations

import logging
from typing import Any

from flask import Flask, jsonify
from pydantic import ValidationError
from werkzeug.exceptions import HTTPException

logger = logging.getLogger(__name__)


class ApiError(Exception):
    """Bad input, answered with ``status`` and a JSON body naming what is wrong."""

    def __init__(self, message: str, status: int = 400, details: list[dict[str, Any]] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.details = details or []


def validation_details(error: ValidationError, prefix: tuple[Any, ...] = ()) -> list[dict[str, Any]]:
    """pydantic errors as ``[{"loc": [...], "field": "a.b", "message": ...}]``, locations prefixed (e.g. the index)."""
    details = []
    for item in error.errors(include_url=False, include_input=False):
        loc = [*prefix, *item.get("loc", ())]
        field = ".".join(str(part) for part in item.get("loc", ()))
        details.append({"loc": loc, "field": field, "message": item.get("msg", "invalid")})
    return details


def error_response(message: str, status: int, details: list[dict[str, Any]] | None = None):  # type: ignore[no-untyped-def]
    response = jsonify({"error": message, "details": details or []})
    response.status_code = status
    return response


def register_error_handlers(app: Flask) -> None:
    @app.errorhandler(ApiError)
    def _api_error(error: ApiError):  # type: ignore[no-untyped-def]
        return error_response(error.message, error.status, error.details)

    @app.errorhandler(ValidationError)
    def _validation_error(error: ValidationError):  # type: ignore[no-untyped-def]
        details = validation_details(error)
        first = details[0] if details else {"field": "", "message": "invalid"}
        return error_response(f"invalid field '{first['field']}': {first['message']}", 400, details)

    @app.errorhandler(HTTPException)
    def _http_error(error: HTTPException):  # type: ignore[no-untyped-def]
        return error_response(error.description or error.name, error.code or 500)

    @app.errorhandler(Exception)
    def _unexpected(error: Exception):  # type: ignore[no-untyped-def]
        logger.exception("unhandled error")
        return error_response("internal error", 500)
