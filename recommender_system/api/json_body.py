"""Reading the JSON body of a request, with clear 4xx errors for what is not JSON."""

from __future__ import annotations

import json
from typing import Any

from flask import request

from recommender_system.api.errors import ApiError


def json_body() -> Any:
    """The parsed body. Malformed JSON is a 400; the Content-Type is not required to say JSON (the ecoseller
    backend always sends it, other clients may not)."""
    raw = request.get_data(cache=True)
    if not raw or not raw.strip():
        raise ApiError("the request body is empty; a JSON document is expected")
    try:
        return json.loads(raw)
    except (ValueError, UnicodeDecodeError) as error:
        raise ApiError(f"the request body is not valid JSON: {error}") from None
    except RecursionError:
        raise ApiError("the request body is nested too deeply") from None
