"""Shapes shared by every route: the JSON error body, and the answer of the store routes."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field


class ErrorDetail(BaseModel):
    loc: list[Any] = Field(description="where the problem is: field names and indexes")
    field: str = Field(description="the dotted field name")
    message: str


class ErrorResponse(BaseModel):
    """Every error: a 4xx for bad input, a 5xx only for faults of the service."""

    error: str = Field(description="what is wrong, in one sentence")
    details: list[ErrorDetail] = Field(default_factory=list)


class StoredResponse(BaseModel):
    """The answer of ``POST /store_object(s)``: how many objects were stored."""

    stored: int
