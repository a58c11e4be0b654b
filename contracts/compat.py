"""Backward-compatibility check between two JSON Schemas of one topic.

Consumers written against the old schema must still read every new event, and events
already on the topic must still validate against the new schema. So, per definition:
no property removed, no property's type changed, the required set unchanged, no enum
or literal value removed. Adding optional properties, definitions, event types (new
``type`` values) and enum values is compatible: consumers ignore types they don't know.
"""

from __future__ import annotations

from typing import Any

Schema = dict[str, Any]


def _shape(node: Any) -> Any:
    """A property's type signature, without prose (descriptions, titles, defaults)."""
    if isinstance(node, dict):
        return {
            key: _shape(value)
            for key, value in node.items()
            if key not in {"description", "title", "default", "examples"}
        }
    if isinstance(node, list):
        return [_shape(item) for item in node]
    return node


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
        elif _shape(old_prop) != _shape(new_props[prop]):
            problems.append(f"{name}.{prop}: type changed")
    old_required, new_required = set(old.get("required", [])), set(new.get("required", []))
    if old_required - new_required:
        problems.append(f"{name}: no longer required: {sorted(old_required - new_required)}")
    if new_required - old_required:
        problems.append(f"{name}: newly required: {sorted(new_required - old_required)}")
    return problems


def breaking_changes(old: Schema, new: Schema) -> list[str]:
    """Every backward-incompatible difference from ``old`` to ``new`` (empty if none)."""
    problems: list[str] = []
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
