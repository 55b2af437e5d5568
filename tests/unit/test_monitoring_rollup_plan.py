"""Pure pieces of the monitoring aggregation: SKU bit sets, which rollup rows cover a window, date parsing."""

from __future__ import annotations

from datetime import datetime

import numpy as np
import pytest
from pydantic import ValidationError

from recommender_system.api.schemas.dashboard import DateWindowQuery
from recommender_system.storage.monitoring import decode_ids, encode_ids, rollup_plan


@pytest.mark.parametrize("ids", [[], [0], [7, 3, 3, 0], list(range(0, 20_000, 3))])
def test_bit_sets_round_trip(ids: list[int]) -> None:
    assert decode_ids(encode_ids(ids)).tolist() == sorted(set(ids))
    assert decode_ids(None).size == 0


def test_bit_sets_stay_small_for_dense_ids() -> None:
    assert len(encode_ids(np.arange(5000))) < 100


def d(text: str) -> datetime:
    return datetime.fromisoformat(text)


def test_rollup_plan_uses_days_hours_and_raw_edges() -> None:
    ranges, span = rollup_plan(d("2026-03-02T10:07:00"), d("2026-03-05T14:23:00"), None)
    assert ranges == [
        ("day", d("2026-03-03T00:00"), d("2026-03-05T00:00")),
        ("hour", d("2026-03-02T11:00"), d("2026-03-03T00:00")),
        ("hour", d("2026-03-05T00:00"), d("2026-03-05T14:00")),
    ]
    assert span == (d("2026-03-02T11:00"), d("2026-03-05T14:00"))


def test_rollup_plan_by_hour_never_uses_daily_rows() -> None:
    ranges, span = rollup_plan(d("2026-03-02T10:00:00"), d("2026-03-05T00:00:00"), "hour")
    assert ranges == [("hour", d("2026-03-02T10:00"), d("2026-03-05T00:00"))]
    assert span == (d("2026-03-02T10:00"), d("2026-03-05T00:00"))


def test_rollup_plan_aligned_days_and_short_windows() -> None:
    ranges, _span = rollup_plan(d("2026-03-02T00:00:00"), d("2026-03-04T00:00:00"), "day")
    assert ranges == [("day", d("2026-03-02T00:00"), d("2026-03-04T00:00"))]
    assert rollup_plan(d("2026-03-02T10:05:00"), d("2026-03-02T10:55:00"), None) == ([], None)
    assert rollup_plan(d("2026-03-02T10:05:00"), d("2026-03-02T11:55:00"), None) == ([], None)


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("2023-08-28T09:30:01.947Z", "2023-08-28T09:30:01.947000"),
        ("2023-08-28T09:30:01Z", "2023-08-28T09:30:01"),
        ("2023-08-28T11:30:01+02:00", "2023-08-28T09:30:01"),
        ("2023-08-28T11:30:01 02:00", "2023-08-28T09:30:01"),  # "+" decoded to a space in a query string
        ("2023-08-28T04:30:01.5-05:00", "2023-08-28T09:30:01.500000"),
        ("2023-08-28T09:30:01", "2023-08-28T09:30:01"),  # no offset: UTC
    ],
)
def test_window_dates_are_naive_utc(given: str, expected: str) -> None:
    query = DateWindowQuery.model_validate({"date_from": given, "date_to": "2030-01-01T00:00:00Z"})
    assert query.date_from == d(expected) and query.date_from.tzinfo is None


@pytest.mark.parametrize(
    "query",
    [
        {},
        {"date_from": "2023-08-28T09:30:01Z"},
        {"date_from": "last week", "date_to": "2023-08-28T09:30:01Z"},
        {"date_from": "2023-08-29T00:00:00Z", "date_to": "2023-08-28T00:00:00Z"},
    ],
)
def test_bad_windows_are_refused(query: dict[str, str]) -> None:
    with pytest.raises(ValidationError):
        DateWindowQuery.model_validate(query)
