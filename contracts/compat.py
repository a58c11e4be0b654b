"""Backward-compatibility check between two JSON Schemas of one topic.

Consumers written against the old schema must still read every new event: per
definition (and the schema's root object), no property removed, no property's type
changed or widened, the required set unchanged, no enum or literal value removed, no
constraint loosened. Adding optional properties, definitions, event types (new ``type``
values) and enum values is compatible: consumers ignore types they don't know.

So is narrowing what a producer may emit: a new or tighter ``pattern``/``minimum``/
``maximum``/``minLength``/``maxLength``/``minItems``/... , ``null`` no longer allowed, a
constraint added to a definition (``allOf``). Every event valid under the new schema is
valid under the old one, so old readers read it. Events already on the topic that the
new constraints refuse are ones no worker could apply (they would be dead-lettered
anyway): the constraints are added to refuse them at the door.
"""

from __future__ import annotations

from typing import Any

Schema = dict[str, Any]

_PROSE = frozenset({"description", "title", "default", "examples"})
_LOWER_BOUNDS = frozenset({"minimum", "exclusiveMinimum", "minLength", "minItems", "minProperties"})
_UPPER_BOUNDS = frozenset({"maximum", "exclusiveMaximum", "maxLength", "maxItems", "maxProperties"})
_SUBSCHEMAS = frozenset({"items", "additionalProperties", "propertyNames"})
_MISSING: Any = object()


def _shape(node: Any) -> Any:
    """A property's type signature, without prose (descriptions, titles, defaults)."""
    if isinstance(node, dict):
        return {key: _shape(value) for key, value in node.items() if key not in _PROSE}
    if isinstance(node, list):
        return [_shape(item) for item in node]
    return node


def _alternatives(node: Any) -> list[Any]:
    if isinstance(node, dict) and set(node) == {"anyOf"}:
        return list(node["anyOf"])
    return [node]


def narrows(old: Any, new: Any) -> bool:
    """True when every value ``new`` accepts, ``old`` accepts too (prose-free schemas).

    Conservative: what it cannot prove (a changed pattern, another type) is not narrowing.
    """
    old_alternatives, new_alternatives = _alternatives(old), _alternatives(new)
    if len(old_alternatives) > 1 or len(new_alternatives) > 1:
        # A union narrows when each new alternative narrows one of the old ones.
        return all(any(narrows(o, n) for o in old_alternatives) for n in new_alternatives)
    if old == new or new is False or old is True:
        return True
    if not isinstance(old, dict) or not isinstance(new, dict):
        return False
    return all(_keyword_narrows(key, old.get(key, _MISSING), new.get(key, _MISSING))
               for key in old.keys() | new.keys())  # fmt: skip


def _keyword_narrows(key: str, old: Any, new: Any) -> bool:
    if old == new:
        return True
    if key in _LOWER_BOUNDS:
        return old is _MISSING or (new is not _MISSING and new >= old)
    if key in _UPPER_BOUNDS:
        return old is _MISSING or (new is not _MISSING and new <= old)
    if key in _SUBSCHEMAS:
        return new is not _MISSING and (old is _MISSING or narrows(old, new))
    if key == "allOf":  # more conjuncts accept less
        return new is not _MISSING and (old is _MISSING or all(part in new for part in old))
    if key == "pattern":  # an added pattern narrows; two patterns cannot be compared
        return old is _MISSING
    return False


def _values(node: Schema) -> set[Any] | None:
    if "const" in node:
        return {node["const"]}
    if "enum" in node:
        return set(node["enum"])
    return None


def _compare_definition(name: str, old: Schema, new: Schema) -> list[str]:
    problems: list[str] = []
    old_values, new_values = _values(old), _values(new)
    if old_values is not None:
        if new_values is None or not old_values <= new_values:
            problems.append(f"{name}: values removed: {sorted(old_values - (new_values or set()))}")
        return problems
    old_props, new_props = old.get("properties", {}), new.get("properties", {})
    for prop, old_prop in old_props.items():
        if prop not in new_props:
            problems.append(f"{name}.{prop}: removed")
            continue
        old_prop_values, new_prop_values = _values(old_prop), _values(new_props[prop])
        if old_prop_values is not None and new_prop_values is not None:
            if not old_prop_values <= new_prop_values:
                removed = sorted(old_prop_values - new_prop_values)
                problems.append(f"{name}.{prop}: values removed: {removed}")
        elif not narrows(_shape(old_prop), _shape(new_props[prop])):
            problems.append(f"{name}.{prop}: type changed")
    old_required, new_required = set(old.get("required", [])), set(new.get("required", []))
    if old_required - new_required:
        problems.append(f"{name}: no longer required: {sorted(old_required - new_required)}")
    if new_required - old_required:
        problems.append(f"{name}: newly required: {sorted(new_required - old_required)}")
    if not narrows(_rest(old), _rest(new)):
        problems.append(f"{name}: constraints changed")
    return problems


def _rest(definition: Schema) -> Schema:
    """A definition's own constraints, besides its properties (compared one by one)."""
    skip = {"properties", "required", "$defs", "$schema", "discriminator", "oneOf", *_PROSE}
    rest: Schema = _shape({key: value for key, value in definition.items() if key not in skip})
    return rest


def breaking_changes(old: Schema, new: Schema) -> list[str]:
    """Every backward-incompatible difference from ``old`` to ``new`` (empty if none)."""
    problems: list[str] = []
    if "properties" in old:  # a root object (one model per topic) is a definition too
        problems.extend(_compare_definition(old.get("title", "<root>"), old, new))
    old_defs, new_defs = old.get("$defs", {}), new.get("$defs", {})
    for name, definition in old_defs.items():
        if name not in new_defs:
            problems.append(f"{name}: definition removed")
        else:
            problems.extend(_compare_definition(name, definition, new_defs[name]))
    old_mapping = old.get("discriminator", {}).get("mapping", {})
    new_mapping = new.get("discriminator", {}).get("mapping", {})
    for event_type, ref in old_mapping.items():
        if new_mapping.get(event_type) != ref:
            problems.append(f"event type {event_type!r}: removed or moved")
    return problems
