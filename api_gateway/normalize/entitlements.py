"""``entitlements.active_entitlement_summary.updated`` → ``EntitlementSummary``."""

from __future__ import annotations

from pydantic import ValidationError

from api_gateway.normalize.errors import refused
from api_gateway.normalize.fields import Reader
from contracts import ActiveEntitlement, EntitlementSummary


def summary(obj: Reader) -> EntitlementSummary:
    return EntitlementSummary(
        entitlements=[_entitlement(ent) for ent in _entitlements(obj)],
        truncated=_has_more(obj),
    )


def _entitlement(ent: Reader) -> ActiveEntitlement:
    try:
        return ActiveEntitlement(
            id=ent.req_str("id"),
            feature_id=_required_ref(ent, "feature"),
            lookup_key=ent.req_str("lookup_key"),
        )
    except ValidationError as exc:
        raise refused(exc, ent.path) from exc


def _required_ref(obj: Reader, key: str) -> str:
    value = obj.ref(key)
    if value is None:
        # Reuse the reader's wording for a missing required field.
        return obj.req_str(key)
    return value


def _entitlements(obj: Reader) -> list[Reader]:
    # The summary is the complete active set: a missing list must not read as "none"
    # (that would revoke every feature), so it is unmappable rather than empty.
    if obj.child("entitlements") is None:
        obj.req_str("entitlements")
    return obj.list_of("entitlements")


def _has_more(obj: Reader) -> bool:
    listing = obj.expanded("entitlements")
    return bool(listing and listing.opt_bool("has_more"))
