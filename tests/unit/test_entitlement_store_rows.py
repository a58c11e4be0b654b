"""Every JSON row ``store.save`` sends names exactly the columns its statement unpacks: a
misspelled key would otherwise be a silent NULL."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any

from pydantic_core import from_json

from workers.entitlement import store
from workers.entitlement.rules import Effective, Grant, Mark, SourceGrants
from workers.entitlement.state import CustomerRow, CustomerState, SourceRow

AT = datetime(2026, 1, 2, 3, 4, 5, 678901, tzinfo=UTC)


class RecordingConnection:
    def __init__(self) -> None:
        self.statements: list[tuple[str, Any]] = []

    async def execute(self, sql: str, *args: Any) -> str:
        self.statements.append((sql, from_json(args[0])))
        return "OK"


def _recordset_columns(sql: str) -> set[str]:
    match = re.search(
        r"json_to_recordset\(\$1::text::json\) AS t\((.*?)\)\s*(?:ON|WHERE|$)", sql, re.S
    )
    assert match, sql
    return {column.split()[0].strip('"') for column in match.group(1).split(",")}


def _states() -> list[CustomerState]:
    changed = CustomerState("cus_a")
    changed.put_customer(CustomerRow("cus_a", "user_1", Mark(AT, 1, "evt_1"), None, None))
    changed.put_source(
        SourceRow(
            source_id="sub_1",
            kind="subscription",
            status="active",
            grants=SourceGrants({"seats": Grant(5, AT)}, {"pro": None}, ()),
            mark=Mark(AT, 1, "evt_1"),
            snapshot='{"id": "sub_1"}',
        )
    )
    changed.put_entitlement("seats", Effective(5, AT, ("sub_1",)), AT)
    changed.put_entitlement("sso", None, AT)
    changed.set_due(AT)
    undue = CustomerState("cus_b")
    undue.set_due(None)
    return [changed, undue]


async def test_saved_rows_match_their_statements_columns() -> None:
    conn = RecordingConnection()
    await store.save(conn, _states())  # type: ignore[arg-type]

    # customers, sources, dropped and put entitlements, un-scheduled and scheduled
    assert len(conn.statements) == 6
    for sql, rows in conn.statements:
        if "json_array_elements_text" in sql:  # un-scheduling: a list of customer ids
            assert rows == ["cus_b"]
            continue
        columns = _recordset_columns(sql)
        assert rows and all(set(row) == columns for row in rows), (sql, rows)
