"""Version-tolerant readers over Stripe JSON.

Stripe renders an event with the API version of the account or endpoint, so one field can
be absent, null, an id string or an expanded object depending on the version and on the
request that caused the event. Every read goes through ``Reader`` so that a wrong shape
becomes an ``UnmappableEvent`` naming the exact field, never a ``KeyError``/``TypeError``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from api_gateway.normalize.errors import UnmappableEvent

# Stripe's decimal strings (``unit_amount_decimal``): digits, an optional fraction, no
# exponent. Decimal() would also take "1e9", "NaN", " 1" and "1_000".
_DECIMAL = re.compile(r"(-?)([0-9]+)(?:\.([0-9]+))?")
_WHOLE_DIGITS_MAX = 19  # more digits than any bigint has


def _kind(value: Any) -> str:
    return "null" if value is None else type(value).__name__


def to_datetime(value: Any, path: str) -> datetime:
    """Unix seconds to an aware UTC datetime."""
    # bool is an int subclass; True is not a timestamp.
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise UnmappableEvent(f"{path}: expected unix seconds, got {_kind(value)}")
    try:
        return datetime.fromtimestamp(value, tz=UTC)
    except (OverflowError, OSError, ValueError) as exc:
        raise UnmappableEvent(f"{path}: timestamp {value!r} out of range") from exc


class Reader:
    """A read-only view of one JSON object that knows its path inside the event."""

    __slots__ = ("_data", "path")

    def __init__(self, data: Any, path: str) -> None:
        if not isinstance(data, Mapping):
            raise UnmappableEvent(f"{path}: expected an object, got {_kind(data)}")
        self._data: Mapping[str, Any] = data
        self.path = path

    def _at(self, key: str) -> str:
        return f"{self.path}.{key}"

    def get(self, key: str) -> Any:
        return self._data.get(key)

    def has(self, key: str) -> bool:
        """True when the key is present and not null."""
        return self._data.get(key) is not None

    # -- scalars -------------------------------------------------------------------------

    def opt_str(self, key: str) -> str | None:
        value = self._data.get(key)
        if value is None or isinstance(value, str):
            return value
        raise UnmappableEvent(f"{self._at(key)}: expected a string, got {_kind(value)}")

    def req_str(self, key: str) -> str:
        value = self.opt_str(key)
        if not value:
            raise UnmappableEvent(f"{self._at(key)}: required string is missing")
        return value

    def opt_int(self, key: str) -> int | None:
        value = self._data.get(key)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int):
            raise UnmappableEvent(f"{self._at(key)}: expected an integer, got {_kind(value)}")
        return value

    def int_or(self, key: str, default: int) -> int:
        value = self.opt_int(key)
        return default if value is None else value

    def req_int(self, key: str) -> int:
        value = self.opt_int(key)
        if value is None:
            raise UnmappableEvent(f"{self._at(key)}: required integer is missing")
        return value

    def opt_whole_decimal(self, key: str) -> int | None:
        """A decimal string as an integer when it is whole ("8000", "8000.00"); None when
        absent or when it has a fraction (which no integer amount states faithfully)."""
        value = self._data.get(key)
        if value is None:
            return None
        if not isinstance(value, str):
            raise UnmappableEvent(f"{self._at(key)}: expected a decimal string, got {_kind(value)}")
        match = _DECIMAL.fullmatch(value)
        if match is None:
            raise UnmappableEvent(f"{self._at(key)}: expected a decimal string")
        sign, whole, fraction = match.groups()
        if fraction and fraction.strip("0"):
            return None
        whole = whole.lstrip("0") or "0"
        if len(whole) > _WHOLE_DIGITS_MAX:
            raise UnmappableEvent(f"{self._at(key)}: decimal out of range")
        return -int(whole) if sign else int(whole)

    def opt_bool(self, key: str) -> bool | None:
        value = self._data.get(key)
        if value is None or isinstance(value, bool):
            return value
        raise UnmappableEvent(f"{self._at(key)}: expected a boolean, got {_kind(value)}")

    def flag(self, key: str) -> bool:
        """A boolean that Stripe omits when false in some versions."""
        return self.opt_bool(key) is True

    def opt_time(self, key: str) -> datetime | None:
        value = self._data.get(key)
        return None if value is None else to_datetime(value, self._at(key))

    # -- references ----------------------------------------------------------------------

    def ref(self, key: str) -> str | None:
        """An id that may arrive as a string or as the expanded object carrying ``id``."""
        value = self._data.get(key)
        if value is None or value == "":
            return None
        if isinstance(value, str):
            return value
        if isinstance(value, Mapping):
            return Reader(value, self._at(key)).req_str("id")
        raise UnmappableEvent(f"{self._at(key)}: expected an id or an object, got {_kind(value)}")

    def loose_ref(self, key: str) -> str | None:
        """Like ``ref`` for ids we only carry along: an odd shape means "unknown", not 422.

        Real old payloads hold placeholders such as ``"charge": 0``; refusing the whole
        invoice for a cross-reference we merely copy would block it forever.
        """
        try:
            return self.ref(key)
        except UnmappableEvent:
            return None

    # -- structure -----------------------------------------------------------------------

    def child(self, key: str) -> Reader | None:
        value = self._data.get(key)
        return None if value is None else Reader(value, self._at(key))

    def expanded(self, key: str) -> Reader | None:
        """The expanded object behind a reference, or None when it is only an id."""
        value = self._data.get(key)
        return Reader(value, self._at(key)) if isinstance(value, Mapping) else None

    def list_of(self, key: str) -> list[Reader]:
        """Objects of a Stripe list (``{"object": "list", "data": [...]}``) or a bare array."""
        value = self._data.get(key)
        path = self._at(key)
        if value is None:
            return []
        if isinstance(value, Mapping):
            value = value.get("data")
            path = f"{path}.data"
            if value is None:
                return []
        if not isinstance(value, list):
            raise UnmappableEvent(f"{path}: expected a list, got {_kind(value)}")
        return [Reader(item, f"{path}[{i}]") for i, item in enumerate(value)]

    def expanded_items(self, key: str) -> list[Reader]:
        """The expanded objects of a list whose items may also be bare ids (skipped: an id
        says nothing about the object behind it)."""
        value = self._data.get(key)
        path = self._at(key)
        if isinstance(value, Mapping):
            value = value.get("data")
            path = f"{path}.data"
        if value is None:
            return []
        if not isinstance(value, list):
            raise UnmappableEvent(f"{path}: expected a list, got {_kind(value)}")
        found: list[Reader] = []
        for i, item in enumerate(value):
            if isinstance(item, str):
                continue
            found.append(Reader(item, f"{path}[{i}]"))
        return found

    def keys(self) -> list[str]:
        return [str(k) for k in self._data]

    def metadata(self, key: str = "metadata") -> dict[str, str]:
        """Stripe metadata as ``str -> str``; absent or null is empty."""
        value = self._data.get(key)
        if value is None:
            return {}
        if not isinstance(value, Mapping):
            raise UnmappableEvent(f"{self._at(key)}: expected an object, got {_kind(value)}")
        # Stripe only stores strings, but hand-made and very old payloads hold numbers or
        # booleans; keep them as their JSON text. A null value means "unset" in Stripe.
        return {
            str(k): v if isinstance(v, str) else json.dumps(v, sort_keys=True)
            for k, v in value.items()
            if v is not None
        }
