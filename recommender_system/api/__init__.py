"""HTTP layer: blueprints that parse, make one call and serialise."""

from __future__ import annotations

from flask import Blueprint

from recommender_system.api import health

BLUEPRINTS: list[Blueprint] = [health.blueprint]
