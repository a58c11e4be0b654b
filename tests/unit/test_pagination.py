"""The ledger lists' cursors and query strings (api_gateway/pagination.py)."""

from __future__ import annotations

import base64
from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st
from starlette.datastructures import QueryParams
from starlette.exceptions import HTTPException

from api_gateway.pagination import (
    DEFAULT_LIMIT,
    MAX_LIMIT,
    ListQuery,
    Position,
    decode_cursor,
    encode_cursor,
    list_query,
    openapi_parameters,
)

T = datetime(2030, 1, 1, tzinfo=UTC)
moments = st.datetimes(
    min_value=datetime(1970, 1, 1),
    max_value=datetime(9999, 12, 30),
    timezones=st.sampled_from([UTC, timezone(timedelta(hours=5, minutes=30))]),
)
ids = st.text(st.characters(codec="utf-8", exclude_characters="\x00"), min_size=1, max_size=40)


@given(created_at=moments, row_id=ids)
def test_a_cursor_names_the_position_it_was_made_of(created_at: datetime, row_id: str) -> None:
    cursor = encode_cursor(Position(created_at, row_id))
    assert cursor.isascii() and "=" not in cursor  # as it is in a query string
    assert decode_cursor(cursor) == Position(created_at, row_id)


def b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


@pytest.mark.parametrize(
    "cursor",
    [
        "",
        "abc",  # not base64 of anything (a lone extra character)
        "!!!!",
        "ümlaut",
        b64(b"not json"),
        b64(b'{"at": 1, "id": "x"}'),
        b64(b"[1, 2]"),
        b64(b'[1.5, "x"]'),
        b64(b'[1, "x", 3]'),
        b64(b'[1, "a\\u0000b"]'),  # an id PostgreSQL cannot hold
        b64(b'[1, "\\ud800"]'),  # a lone surrogate
        b64(b'[999999999999999999999999, "x"]'),  # past year 9999
        b64(b'[-999999999999999999999999, "x"]'),
        encode_cursor(Position(T, "x")) + "$",
    ],
)
def test_anything_else_is_refused_with_one_message(cursor: str) -> None:
    with pytest.raises(ValueError, match=r"^not a cursor this API issued$"):
        decode_cursor(cursor)


@given(st.text(max_size=60))
def test_no_text_makes_the_decoder_fail_otherwise(text: str) -> None:
    try:
        decode_cursor(text)
    except ValueError as exc:
        assert str(exc) == "not a cursor this API issued"


def query(text: str) -> ListQuery:
    return list_query(QueryParams(text))


def refusal(text: str) -> str:
    with pytest.raises(HTTPException) as caught:
        query(text)
    assert caught.value.status_code == 400
    return str(caught.value.detail)


def test_defaults_and_the_cap() -> None:
    assert query("").limit == DEFAULT_LIMIT
    assert (query("limit=1").limit, query("limit=100").limit) == (1, 100)
    assert query("limit=101").limit == query(f"limit={10**30}").limit == MAX_LIMIT
    assert query("").before() is None


def test_the_page_ends_at_the_cursor_or_created_lt_whichever_comes_first() -> None:
    cursor = encode_cursor(Position(T, "in_5"))
    assert query(f"cursor={cursor}").before() == Position(T, "in_5")
    earlier, later = (T - timedelta(seconds=1)).isoformat(), (T + timedelta(seconds=1)).isoformat()
    lt = "created%5Blt%5D"
    assert query(f"{lt}={earlier.replace('+', '%2B')}").before() == Position(
        T - timedelta(seconds=1), ""
    )
    assert query(f"cursor={cursor}&{lt}={later.replace('+', '%2B')}").before() == Position(
        T, "in_5"
    )
    # The same instant: before every row created then, the cursor's too.
    assert query(f"cursor={cursor}&{lt}={int(T.timestamp())}").before() == Position(T, "")


def test_times_take_an_offset_or_unix_seconds() -> None:
    gte = "created%5Bgte%5D"
    assert query(f"{gte}=2030-01-01T05:30:00%2B05:30").created_gte == T
    assert query(f"{gte}=2030-01-01T00:00:00Z").created_gte == T
    assert query(f"{gte}={int(T.timestamp())}").created_gte == T
    assert refusal(f"{gte}=2030-01-01T00:00:00") == "created[gte]: Input should have timezone info"


def test_unix_seconds_are_seconds_whatever_their_size() -> None:
    """pydantic would read a number above 2e10 as milliseconds (year 1970)."""
    gte = "created%5Bgte%5D"
    far = datetime(2762, 3, 21, 20, 26, 40, tzinfo=UTC)
    assert query(f"{gte}=25000000000").created_gte == far
    assert query(f"{gte}=1893456000.25").created_gte == T + timedelta(milliseconds=250)
    assert query(f"{gte}=-62135596800").created_gte == datetime(1, 1, 1, tzinfo=UTC)
    assert query(f"{gte}=%2B1893456000").created_gte == T


@pytest.mark.parametrize(
    "value",
    [
        "9999-12-31T23:59:59-14:00",  # past year 9999 in UTC
        "0001-01-01T00:00:00%2B14:00",  # before year 1 in UTC
        "99999999999999999999",  # seconds past year 9999
        "-62135596801",  # a second before year 1
    ],
)
@pytest.mark.parametrize("name", ["created[gte]", "created[lt]"])
def test_a_time_utc_cannot_hold_is_refused(name: str, value: str) -> None:
    assert refusal(f"{name}={value}") == f"{name}: time out of range"


def test_times_are_in_utc() -> None:
    lt = query("created%5Blt%5D=2030-01-01T05:30:00%2B05:30").created_lt
    assert lt is not None and lt.utcoffset() == timedelta(0) and lt == T


@pytest.mark.parametrize(
    ("text", "detail"),
    [
        ("limit=0", "limit: Input should be greater than or equal to 1"),
        ("status=", "status: String should have at least 1 character"),
        ("status=" + "s" * 65, "status: String should have at most 64 characters"),
        ("status=a%00b", "status: must be text without NUL characters"),
        ("cursor=zz", "cursor: not a cursor this API issued"),
        ("created_gte=1", "created_gte: unknown query parameter"),
        ("limit=1&status=a&limit=2", "limit: given more than once"),
        (
            "limit=0&cursor=zz",
            "limit: Input should be greater than or equal to 1; "
            "cursor: not a cursor this API issued",
        ),
    ],
)
def test_refusals_name_each_parameter(text: str, detail: str) -> None:
    assert refusal(text) == detail


def test_a_refusal_never_echoes_the_value_and_cuts_long_names() -> None:
    secret = "sk_live_" + "x" * 40
    assert secret not in refusal(f"limit={secret}")
    detail = refusal("n" * 5000 + "=1")
    assert len(detail) < 300 and detail.endswith("…: unknown query parameter")


def test_openapi_lists_every_parameter_the_model_takes() -> None:
    parameters = {p["name"]: p for p in openapi_parameters()}
    assert set(parameters) == {f.alias or name for name, f in ListQuery.model_fields.items()}
    assert all(p["in"] == "query" and p["description"] for p in parameters.values())
    assert parameters["limit"]["schema"] == {"type": "integer", "minimum": 1, "default": 20}
    assert parameters["created[lt]"]["schema"] == {"type": "string", "format": "date-time"}
    assert parameters["cursor"]["schema"] == {"type": "string"}
