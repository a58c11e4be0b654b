"""``one_line``: the one form in which the CLI and the logs give an error's message."""

from __future__ import annotations

import yaml

from billing_fleet.logs import one_line


def test_a_message_over_several_lines_becomes_one() -> None:
    try:
        yaml.safe_load("products: [\n  - {\n")
    except yaml.YAMLError as exc:
        error = exc
    assert "\n" in str(error)

    assert "\n" not in one_line(error) and "  " not in one_line(error)
    assert one_line(error).startswith("while parsing a flow")


def test_an_error_without_a_message_is_named_by_its_class() -> None:
    assert one_line(TimeoutError()) == "TimeoutError"
