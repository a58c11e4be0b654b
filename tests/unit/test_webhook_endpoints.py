"""The webhook endpoints file: what it accepts, how it says what is wrong, the filter,
and reading it again when it changes."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from tests.webhook_support import endpoint, new_secret, write_endpoints
from workers.notification.webhooks import endpoints as endpoints_module
from workers.notification.webhooks.endpoints import (
    EndpointsError,
    EndpointsFile,
    load_endpoints,
    parse_endpoints,
)

SECRET = new_secret()


def parse(*entries: dict[str, Any]) -> Any:
    return parse_endpoints({"endpoints": list(entries)}, origin="endpoints.yaml")


def test_a_valid_file_with_a_rotation_and_filters(tmp_path: Path) -> None:
    second = new_secret()
    path = write_endpoints(
        tmp_path / "endpoints.yaml",
        [
            endpoint(
                "accounting", "https://acc.example/hooks?x=1", [SECRET, second], ["invoice.*"]
            ),
            endpoint("crm", "http://127.0.0.1:8080/b", [SECRET], enabled=False),
            {"id": "all", "url": "https://all.example/", "secrets": SECRET},  # one, as a string
        ],
    )
    found = load_endpoints(path)
    assert [e.id for e in found.endpoints] == ["accounting", "crm", "all"]
    assert found.endpoints[0].secret_values() == (SECRET, second)
    assert found.endpoints[2].secret_values() == (SECRET,)
    assert found.endpoints[2].events == []
    assert SECRET not in repr(found)  # SecretStr: a log line or traceback shows no secret


def test_endpoints_for_matches_types_and_globs_and_skips_the_disabled() -> None:
    found = parse(
        endpoint("invoices", "https://a.example/", [SECRET], ["invoice.*"]),
        endpoint("refunds", "https://b.example/", [SECRET], ["payment.refunded", "refund.*"]),
        endpoint("everything", "https://c.example/", [SECRET]),
        endpoint("off", "https://d.example/", [SECRET], enabled=False),
    )
    assert [e.id for e in found.endpoints_for("invoice.paid")] == ["invoices", "everything"]
    assert [e.id for e in found.endpoints_for("payment.refunded")] == ["refunds", "everything"]
    assert [e.id for e in found.endpoints_for("refund.created")] == ["refunds", "everything"]
    assert [e.id for e in found.endpoints_for("payment.succeeded")] == ["everything"]
    assert found.get("off") is not None and found.get("nope") is None


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        (endpoint("a", "ftp://a.example/", [SECRET]), "endpoints.0.url: must be an http://"),
        (endpoint("a", "https:///nohost", [SECRET]), "endpoints.0.url: must be an http://"),
        (endpoint("a", "https://a.example:99999/", [SECRET]), "endpoints.0.url: not a URL"),
        (endpoint("a", "https://u:p@a.example/", [SECRET]), "must not hold credentials"),
        (endpoint("a", "https://a.example/", ["sk_live_abcdef"]), "must start with whsec_"),
        (endpoint("a", "https://a.example/", ["whsec_not*base64!"]), "followed by base64"),
        (endpoint("a", "https://a.example/", ["whsec_c2hvcnQ="]), "at least 24 bytes"),
        (endpoint("a", "https://a.example/", []), "endpoints.0.secrets: List should have"),
        (endpoint("Bad Id", "https://a.example/", [SECRET]), "endpoints.0.id: must be"),
        (endpoint("a", "https://a.example/", [SECRET], ["invoice. paid"]), "no spaces"),
        ({**endpoint("a", "https://a.example/", [SECRET]), "secret": "x"}, "secret: Extra"),
    ],
)
def test_a_bad_endpoint_is_one_clear_error(entry: dict[str, Any], message: str) -> None:
    with pytest.raises(EndpointsError) as raised:
        parse(entry)
    assert message in str(raised.value)
    assert str(raised.value).startswith("endpoints.yaml: invalid webhook endpoints: ")


def test_duplicate_ids_are_refused() -> None:
    with pytest.raises(EndpointsError, match="endpoint id 'a' is used twice"):
        parse(
            endpoint("a", "https://a.example/", [SECRET]),
            endpoint("a", "https://b.example/", [SECRET]),
        )


def test_errors_never_show_a_secret() -> None:
    almost = "whsec_" + "A" * 10 + "!" + "B" * 30  # a real secret with one typo
    short = "whsec_c2hvcnQ="
    with pytest.raises(EndpointsError) as raised:
        parse(
            endpoint("a", "https://a.example/", [almost]),
            {**endpoint("b", "https://a.example/", []), "secrets": [short, 42]},
        )
    text = str(raised.value)
    assert "endpoints.0.secrets" in text and "endpoints.1.secrets" in text
    assert almost not in text and "A" * 10 not in text and "c2hvcnQ" not in text


def test_missing_and_broken_files(tmp_path: Path) -> None:
    with pytest.raises(EndpointsError, match="not readable"):
        load_endpoints(tmp_path / "missing.yaml")
    broken = tmp_path / "broken.yaml"
    broken.write_text("endpoints: [\n")
    with pytest.raises(EndpointsError, match="not valid YAML"):
        load_endpoints(broken)
    empty = tmp_path / "empty.yaml"
    empty.write_text("")
    assert load_endpoints(empty).endpoints == []
    with pytest.raises(EndpointsError, match="<root>"):
        load_endpoints(_written(tmp_path / "list.yaml", "- id: a\n"))


def test_the_file_is_read_again_when_it_changes_and_a_broken_change_is_ignored(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(endpoints_module, "RELOAD_CHECK_SECONDS", 0.0)
    rotated = new_secret()
    path = write_endpoints(tmp_path / "e.yaml", [endpoint("a", "https://a.example/", [SECRET])])
    watched = EndpointsFile(path)
    assert _secrets(watched) == (SECRET,)
    write_endpoints(path, [endpoint("a", "https://a.example/", [SECRET, rotated])])
    assert _secrets(watched) == (SECRET, rotated)
    _written(path, "endpoints: [\n")  # a half-saved edit: the last good endpoints stay
    assert _secrets(watched) == (SECRET, rotated)
    write_endpoints(path, [endpoint("a", "https://a.example/", [rotated])])
    assert _secrets(watched) == (rotated,)
    assert [e.id for e in watched.endpoints_for("invoice.paid")] == ["a"]


def test_without_a_file_there_are_no_endpoints() -> None:
    assert EndpointsFile(None).endpoints_for("invoice.paid") == []


def test_a_broken_file_at_startup_is_refused(tmp_path: Path) -> None:
    with pytest.raises(EndpointsError):
        EndpointsFile(_written(tmp_path / "e.yaml", "endpoints: [{id: a}]\n"))


def _secrets(watched: EndpointsFile) -> tuple[str, ...]:
    found = watched.get("a")
    assert found is not None
    return found.secret_values()


def _written(path: Path, text: str) -> Path:
    staging = path.with_suffix(f".{time.monotonic_ns()}")
    staging.write_text(text)
    staging.replace(path)
    return path
