"""Merging one feature held through several Stripe customers of one user."""

from __future__ import annotations

from datetime import UTC, datetime

from api_gateway.access_store import Grant, merge

MAY = datetime(2030, 5, 1, tzinfo=UTC)
JUNE = datetime(2030, 6, 1, tzinfo=UTC)


def grant(limit: int | None, expires_at: datetime | None, *sources: str) -> Grant:
    return Grant("seats", limit, expires_at, sources)


def test_a_single_grant_is_unchanged() -> None:
    only = grant(3, MAY, "sub_a")
    assert merge([only]) is only


def test_highest_limit_and_latest_expiry_win_each_on_its_own() -> None:
    merged = merge([grant(10, MAY, "sub_a"), grant(5, JUNE, "sub_b")])
    assert (merged.limit, merged.expires_at) == (10, JUNE)
    assert merged.source == "sub_a"  # the grant that gives the limit
    assert merged.sources == ("sub_a", "sub_b")


def test_unlimited_and_no_expiry_win() -> None:
    merged = merge([grant(100, None, "pi_a"), grant(None, JUNE, "sub_b", "pi_a")])
    assert (merged.limit, merged.expires_at) == (None, None)
    assert merged.source == "sub_b"
    assert merged.sources == ("sub_b", "pi_a")


def test_grant_without_sources_has_no_source() -> None:
    merged = merge([grant(1, MAY), grant(1, MAY)])
    assert (merged.source, merged.sources) == (None, ())
