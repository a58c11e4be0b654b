"""The billing-fleet-contracts wheel stands alone: built from ``distributions/contracts``,
installed into a clean virtual environment (pip resolves pydantic from the index), it
parses an event as the gateway publishes it and ships the schemas and AsyncAPI document.

Slow (a venv and a pip install; one test): it runs in the normal suite, and needs the
package index, as ``tasks.py`` does.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import venv
from pathlib import Path
from typing import Any

import pytest

import contracts
from api_gateway.normalize import normalize
from contracts import BILLING_EVENTS, cloudevent_headers, json_schema
from contracts.documents import SCHEMA_TOPICS
from tests.stripe_fixtures import load_event

ROOT = Path(__file__).resolve().parents[2]
PROJECT = ROOT / "distributions" / "contracts"
STEP_TIMEOUT = 300.0  # seconds per build or install: pip fetches hatchling and pydantic
PYDANTIC_ONLY = {  # pydantic and its own requirements: nothing of the app
    "billing-fleet-contracts",
    "pydantic",
    "pydantic-core",
    "annotated-types",
    "typing-extensions",
    "typing-inspection",
    "pip",
    "setuptools",
}

# Runs inside the clean venv: everything it prints comes from the installed wheel.
CHECK = """
import json, sys
from importlib import metadata, resources
import contracts
from contracts import BILLING_EVENTS, asyncapi_document, cloudevent_headers, json_schema
from contracts import parse_billing_event

event = parse_billing_event(open(sys.argv[1], "rb").read())
files = resources.files("contracts")
shipped = {
    path.name: json.loads(path.read_text(encoding="utf-8"))
    for path in files.joinpath("schemas").iterdir() if path.name.endswith(".json")
}
asyncapi = json.loads(files.joinpath("asyncapi.json").read_text(encoding="utf-8"))
print(json.dumps({
    "file": contracts.__file__,
    "version": contracts.__version__,
    "dist_version": metadata.version("billing-fleet-contracts"),
    "requires": metadata.requires("billing-fleet-contracts"),
    "event": {"id": str(event.id), "type": event.type, "customer_id": event.customer_id},
    "headers": cloudevent_headers(event, source="/billing-fleet/stripe"),
    "shipped": shipped,
    "accessor_schema": json_schema(BILLING_EVENTS),
    "asyncapi": asyncapi,
    "accessor_asyncapi": asyncapi_document(),
    "loaded": sorted({name.split(".")[0] for name in sys.modules}),
}))
"""


def _run(*args: str | Path, cwd: Path) -> str:
    done = subprocess.run(
        [str(a) for a in args], cwd=cwd, capture_output=True, text=True, timeout=STEP_TIMEOUT
    )
    assert done.returncode == 0, f"{args[:4]} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done.stdout


@pytest.mark.timeout(3 * STEP_TIMEOUT)
def test_the_contracts_wheel_parses_a_published_event_in_a_clean_venv(tmp_path: Path) -> None:
    event = normalize(load_event("customer.subscription.created__syncengine__1"))
    published = tmp_path / "event.json"
    published.write_bytes(event.model_dump_json().encode())  # the bytes the gateway sends

    wheels = tmp_path / "wheels"
    pip = (sys.executable, "-m", "pip", "--disable-pip-version-check")
    _run(*pip, "wheel", "--no-deps", "-q", "-w", wheels, PROJECT, cwd=tmp_path)
    [wheel] = wheels.glob("billing_fleet_contracts-*.whl")
    assert wheel.name == f"billing_fleet_contracts-{contracts.__version__}-py3-none-any.whl"

    env = tmp_path / "venv"
    venv.create(env, with_pip=True, system_site_packages=False)
    python = env / "bin" / "python"
    _run(python, "-m", "pip", "--disable-pip-version-check", "install", "-q", wheel, cwd=tmp_path)
    listed = _run(python, "-m", "pip", "list", "--format", "json", cwd=tmp_path)
    installed = {re.sub(r"[-_.]+", "-", d["name"]).lower() for d in json.loads(listed)}
    assert "billing-fleet-contracts" in installed
    assert installed <= PYDANTIC_ONLY

    # -I: neither the working directory nor PYTHONPATH, so only the venv's contracts.
    seen: dict[str, Any] = json.loads(_run(python, "-I", "-c", CHECK, published, cwd=tmp_path))

    assert Path(seen["file"]).is_relative_to(env), seen["file"]
    assert seen["version"] == seen["dist_version"] == contracts.__version__
    assert seen["requires"] == ["pydantic>=2.7"]
    assert seen["event"] == {
        "id": str(event.id),
        "type": event.type,
        "customer_id": event.customer_id,
    }
    assert seen["headers"] == cloudevent_headers(event, source="/billing-fleet/stripe")
    assert seen["shipped"] == {f"{topic}.json": json_schema(topic) for topic in SCHEMA_TOPICS}
    assert seen["accessor_schema"] == json_schema(BILLING_EVENTS)
    assert seen["asyncapi"] == seen["accessor_asyncapi"] == contracts.asyncapi_document()
    assert not {"api_gateway", "workers", "billing_fleet", "fastapi"} & set(seen["loaded"])
