"""The read API's SQL: one indexed query per request, over the entitlement worker's views.

The gateway reads only the views of the worker's read contract (``READ_VIEWS``, created
by ``workers/entitlement/migrations/0003_read_views.sql``), never its tables, so the
worker may change its tables behind them and a gateway role needs SELECT on the views
alone. The views inline: a user's rows still come through ``entitlement_customers
(user_id)`` and the primary key of ``entitlements (customer_id, feature)``, and expired
rows are filtered there. Each query is bounded (``BoundedPool``: connection, query and
release within the gateway's database timeout).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from itertools import groupby

import asyncpg

from billing_fleet.db import BoundedPool

ENTITLEMENTS_VIEW = "read_v1_entitlements"
USER_ENTITLEMENTS_VIEW = "read_v1_user_entitlements"
READ_VIEWS = frozenset({ENTITLEMENTS_VIEW, USER_ENTITLEMENTS_VIEW})
_COLUMNS = 'feature, "limit", expires_at, sources'

USER_SQL = f"""
SELECT {_COLUMNS} FROM {USER_ENTITLEMENTS_VIEW}
WHERE user_id = $1
ORDER BY feature, customer_id
"""
USER_FEATURE_SQL = f"""
SELECT {_COLUMNS} FROM {USER_ENTITLEMENTS_VIEW}
WHERE user_id = $1 AND feature = $2
ORDER BY customer_id
"""
CUSTOMER_SQL = f"""
SELECT {_COLUMNS} FROM {ENTITLEMENTS_VIEW}
WHERE customer_id = $1
ORDER BY feature
"""
CUSTOMER_FEATURE_SQL = f"""
SELECT {_COLUMNS} FROM {ENTITLEMENTS_VIEW}
WHERE customer_id = $1 AND feature = $2
"""
QUERIES = (USER_SQL, USER_FEATURE_SQL, CUSTOMER_SQL, CUSTOMER_FEATURE_SQL)


@dataclass(frozen=True, slots=True)
class Grant:
    """One feature's effective entitlement: ``limit``/``expires_at`` None mean unbounded."""

    feature: str
    limit: int | None
    expires_at: datetime | None
    sources: tuple[str, ...]

    @property
    def source(self) -> str | None:
        return self.sources[0] if self.sources else None


def _strength(grant: Grant) -> tuple[bool, int, bool, float]:
    """Orders grants: unlimited beats any limit, then higher limit, then later expiry."""
    expiry = grant.expires_at.timestamp() if grant.expires_at is not None else 0.0
    return (grant.limit is None, grant.limit or 0, grant.expires_at is None, expiry)


def merge(grants: list[Grant]) -> Grant:
    """Several customers of one user holding one feature: the most generous terms win.

    ``limit`` is the maximum (None = unlimited wins), ``expires_at`` the latest (None =
    no expiry wins), each taken on its own. ``sources`` lists every granting source once,
    those of the strongest grant first, so ``source`` names what gives the limit.
    """
    if len(grants) == 1:
        return grants[0]
    limits = [g.limit for g in grants]
    expiries = [g.expires_at for g in grants]
    strongest = max(grants, key=_strength)
    sources = dict.fromkeys(strongest.sources)
    for grant in grants:
        sources.update(dict.fromkeys(grant.sources))
    return Grant(
        feature=strongest.feature,
        limit=None if None in limits else max(v for v in limits if v is not None),
        expires_at=None if None in expiries else max(v for v in expiries if v is not None),
        sources=tuple(sources),
    )


def _grants(rows: list[asyncpg.Record]) -> list[Grant]:
    """Rows ordered by feature, merged to one grant per feature."""
    grants = (Grant(r[0], r[1], r[2], tuple(r[3])) for r in rows)
    return [merge(list(group)) for _, group in groupby(grants, key=lambda g: g.feature)]


async def user_grants(pool: BoundedPool, user_id: str) -> list[Grant]:
    return _grants(await pool.fetch(USER_SQL, user_id))


async def user_grant(pool: BoundedPool, user_id: str, feature: str) -> Grant | None:
    rows = await pool.fetch(USER_FEATURE_SQL, user_id, feature)
    return _grants(rows)[0] if rows else None


async def customer_grants(pool: BoundedPool, customer_id: str) -> list[Grant]:
    return _grants(await pool.fetch(CUSTOMER_SQL, customer_id))


async def customer_grant(pool: BoundedPool, customer_id: str, feature: str) -> Grant | None:
    rows = await pool.fetch(CUSTOMER_FEATURE_SQL, customer_id, feature)
    return _grants(rows)[0] if rows else None
