"""Keyset pagination of the ledger lists: the query string a list takes, and its cursors.

A list is ordered newest first by ``(created_at, id)``, a total order (ids are unique),
and the next page starts strictly after the last row returned. ``created_at`` is the
object's creation time: it never moves later, and it moves at all only for a payment first
seen through its charge's events (the earliest of their times stands in until the intent's
event brings the intent's creation). So rows written while a client walks the pages never
shift those it has not seen yet: no row that existed when it began is skipped (which an
offset would do), and only such a payment may be seen twice. The cursor is that last
row's position, urlsafe base64 of the JSON ``[microseconds since the epoch, id]``: opaque
to clients, checked on the way in (one this API did not issue is a 400, never a 500).

``created[gte]``/``created[lt]`` are read as Unix seconds when they are a number (pydantic
would take one above 2e10 as milliseconds) and else as ISO 8601 with an offset, then put
in UTC: a time whose UTC instant Python cannot hold (``9999-12-31T23:59:59-14:00``) is a
400 here rather than PostgreSQL's out-of-range error (a 500) later.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Annotated, Any, Final

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    WithJsonSchema,
    field_validator,
)
from pydantic_core import from_json, to_json
from starlette.datastructures import QueryParams
from starlette.exceptions import HTTPException

from contracts.events import storable_text
from contracts.labels import log_value

DEFAULT_LIMIT: Final = 20
MAX_LIMIT: Final = 100
_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND: Final = timedelta(microseconds=1)
_NOT_A_CURSOR: Final = "not a cursor this API issued"
_OUT_OF_RANGE: Final = "time out of range"
_UNIX_SECONDS: Final = re.compile(r"[+-]?[0-9]{1,20}(\.[0-9]{1,9})?")


@dataclass(frozen=True, slots=True, order=True)
class Position:
    """A row's place in a list: ordered as the list is, oldest first."""

    created_at: datetime
    id: str


def encode_cursor(position: Position) -> str:
    micros = (position.created_at - _EPOCH) // _MICROSECOND
    return base64.urlsafe_b64encode(to_json([micros, position.id])).rstrip(b"=").decode()


def decode_cursor(cursor: object) -> Position:
    """The position ``cursor`` names; ValueError for anything ``encode_cursor`` did not make."""
    if not isinstance(cursor, str) or not cursor.isascii():
        raise ValueError(_NOT_A_CURSOR)
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        value = from_json(base64.b64decode(padded, altchars=b"-_", validate=True))
        match value:
            case [int(micros), str(row_id)] if storable_text(row_id):
                return Position(_EPOCH + micros * _MICROSECOND, row_id)
    except (binascii.Error, ValueError, OverflowError):
        pass  # not base64, not JSON, or a time out of range: all the same to the client
    raise ValueError(_NOT_A_CURSOR)


def _storable(text: str) -> str:
    if not storable_text(text):
        raise ValueError("must be text without NUL characters")
    return text


def _unix_seconds(value: object) -> object:
    """A number of Unix seconds as a UTC time (whatever its size); anything else as given,
    for pydantic to read as ISO 8601."""
    if isinstance(value, str) and _UNIX_SECONDS.fullmatch(value):
        micros = int(Decimal(value) * 1_000_000)
        try:
            return _EPOCH + micros * _MICROSECOND
        except OverflowError:
            raise ValueError(_OUT_OF_RANGE) from None
    return value


def _in_utc(value: datetime) -> datetime:
    try:
        return value.astimezone(UTC)
    except OverflowError:  # an offset pushes it past year 9999 or before year 1
        raise ValueError(_OUT_OF_RANGE) from None


Time = Annotated[AwareDatetime, BeforeValidator(_unix_seconds), AfterValidator(_in_utc)]
"""A ``created`` bound: Unix seconds, or ISO 8601 with an offset; in UTC."""
Cursor = Annotated[
    Position,
    BeforeValidator(decode_cursor),
    WithJsonSchema({"type": "string"}),
]
Status = Annotated[str, StringConstraints(min_length=1, max_length=64), AfterValidator(_storable)]


class ListQuery(BaseModel):
    """The query string of a ledger list; any other parameter is refused (a misspelled
    filter must not silently return everything)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    limit: int = Field(
        default=DEFAULT_LIMIT,
        ge=1,
        description=f"Rows per page; more than {MAX_LIMIT} counts as {MAX_LIMIT}.",
    )
    cursor: Cursor | None = Field(
        default=None, description="`next_cursor` of the previous page; omit for the first."
    )
    status: Status | None = Field(
        default=None, description="Only rows with this status (e.g. `paid`, `succeeded`)."
    )
    created_gte: Time | None = Field(
        default=None,
        alias="created[gte]",
        description="Only rows created at or after this time: ISO 8601 with an offset, or "
        "Unix seconds.",
    )
    created_lt: Time | None = Field(
        default=None,
        alias="created[lt]",
        description="Only rows created before this time: ISO 8601 with an offset, or Unix seconds.",
    )

    @field_validator("limit")
    @classmethod
    def _capped(cls, value: int) -> int:
        return min(value, MAX_LIMIT)

    def before(self) -> Position | None:
        """The page's upper bound (exclusive): the cursor's row or ``created[lt]``,
        whichever comes first; None: from the newest row."""
        # (t, "") is below every row created at t: ids are never empty.
        bounds = [self.cursor, Position(self.created_lt, "") if self.created_lt else None]
        present = [bound for bound in bounds if bound is not None]
        return min(present) if present else None


def list_query(params: QueryParams) -> ListQuery:
    """``params`` as a ListQuery, or HTTPException 400 naming each refused parameter."""
    items = params.multi_items()
    given = dict(items)
    if len(given) < len(items):
        repeated = sorted({name for name, _ in items if params.getlist(name)[1:]})
        raise HTTPException(400, f"{_names(repeated)}: given more than once")
    try:
        return ListQuery.model_validate(given)
    except ValidationError as exc:
        raise HTTPException(400, _detail(exc.errors())) from exc


def _names(names: Sequence[str]) -> str:
    return ", ".join(log_value(name) for name in names[:3])


def _detail(errors: Sequence[Any]) -> str:
    """One line naming each refused parameter (never echoing its value)."""
    parts = []
    for error in errors[:3]:
        name = log_value(str(error["loc"][0])) if error["loc"] else "query"
        if error["type"] == "extra_forbidden":
            message = "unknown query parameter"
        elif error["type"] == "value_error":  # ours: without pydantic's "Value error, "
            message = str(error["ctx"]["error"])
        else:
            message = error["msg"]
        parts.append(f"{name}: {message}")
    return "; ".join(parts)


def openapi_parameters() -> list[dict[str, Any]]:
    """The list parameters, for OpenAPI (``openapi_extra``), from ``ListQuery`` itself."""
    parameters = []
    for name, schema in ListQuery.model_json_schema(by_alias=True)["properties"].items():
        schema.pop("title", None)
        if schema.get("default", 0) is None:
            del schema["default"]
        description = schema.pop("description", "")
        # Optional in the model, but a parameter is absent rather than null.
        variants = [s for s in schema.pop("anyOf", []) if s.get("type") != "null"]
        schema.update(variants[0] if variants else {})
        parameters.append(
            {"name": name, "in": "query", "description": description, "schema": schema}
        )
    return parameters
