"""The Dockerfile builds the hardened image the README describes (no Docker daemon here:
its instructions are parsed per stage and checked), and its lock covers pyproject.toml."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = (ROOT / "Dockerfile").read_text()
WEASYPRINT_LIBRARIES = {"libpango-1.0-0", "libpangoft2-1.0-0", "libharfbuzz0b"}


@dataclass(frozen=True)
class Instruction:
    keyword: str
    value: str

    def exec_form(self) -> list[str]:
        """The JSON array of an exec-form instruction (ENTRYPOINT ["a"], VOLUME [...])."""
        parsed = json.loads(self.value)
        assert isinstance(parsed, list), self
        return [str(part) for part in parsed]


@dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[Instruction] = field(default_factory=list)

    def values(self, keyword: str) -> list[str]:
        return [i.value for i in self.instructions if i.keyword == keyword]

    def last(self, keyword: str) -> Instruction:
        return [i for i in self.instructions if i.keyword == keyword][-1]

    def env(self) -> dict[str, str]:
        """ENV key=value pairs (values without spaces or quotes, as this Dockerfile has)."""
        pairs: dict[str, str] = {}
        for value in self.values("ENV"):
            pairs.update(part.split("=", 1) for part in value.split())  # type: ignore[misc]
        return pairs


def instructions(text: str) -> Iterator[Instruction]:
    """Each instruction with its continuation lines joined; comments dropped."""
    logical = ""
    for line in text.splitlines():
        if not logical and (not line.strip() or line.lstrip().startswith("#")):
            continue
        if logical and line.lstrip().startswith("#"):  # a comment inside a continuation
            continue
        if line.rstrip().endswith("\\"):
            logical += line.rstrip()[:-1] + " "
            continue
        logical += line
        keyword, _, value = logical.strip().partition(" ")
        yield Instruction(keyword.upper(), " ".join(value.split()))
        logical = ""
    assert not logical, "the Dockerfile ends inside a continuation line"


def stages(text: str) -> list[Stage]:
    found: list[Stage] = []
    for instruction in instructions(text):
        if instruction.keyword == "FROM":
            match = re.fullmatch(r"(\S+)(?: AS (\S+))?", instruction.value, re.I)
            assert match, instruction
            found.append(Stage(base=match[1], name=match[2]))
        else:
            assert found, f"{instruction} before the first FROM"
            found[-1].instructions.append(instruction)
    return found


STAGES = stages(DOCKERFILE)
BUILDER, FINAL = STAGES[0], STAGES[-1]


def test_multi_stage_on_a_pinned_slim_python() -> None:
    assert len(STAGES) >= 2
    for stage in STAGES:
        # A full version (3.11.14), not a moving 3.11-slim tag.
        assert re.fullmatch(r"python:3\.1[12]\.\d+-slim(-\w+)?", stage.base), stage.base
    assert len({stage.base for stage in STAGES}) == 1, "builder and final share one base"


def test_dependencies_come_from_the_lock_in_the_builder() -> None:
    runs = " && ".join(BUILDER.values("RUN"))
    assert "-r constraints.txt" in runs
    assert "constraints.txt" in " ".join(BUILDER.values("COPY"))
    # The package itself adds nothing the lock does not pin, and the lock must satisfy it.
    assert re.search(r"pip install --no-deps \.", runs)
    assert "pip check" in runs
    assert "PIP_NO_CACHE_DIR=1" in " ".join(BUILDER.values("ENV"))


def test_the_final_stage_copies_the_venv_and_installs_no_compiler_or_cache() -> None:
    copies = FINAL.values("COPY")
    assert any(c.startswith(f"--from={BUILDER.name} /opt/venv /opt/venv") for c in copies)
    runs = " ".join(FINAL.values("RUN"))
    assert "pip install" not in runs, "dependencies are installed in the builder only"
    for tool in ("build-essential", "gcc", "g++", "make", "-dev ", "curl", "wget"):
        assert tool not in runs + " ", tool
    assert "--no-install-recommends" in runs
    assert "rm -rf /var/lib/apt/lists/*" in runs
    assert FINAL.env()["PATH"].startswith("/opt/venv/bin:")


def test_the_final_stage_has_weasyprints_libraries_and_a_font() -> None:
    runs = " ".join(FINAL.values("RUN"))
    installed = set(re.findall(r"[\w.+-]+", runs.split("--no-install-recommends", 1)[1]))
    assert installed >= WEASYPRINT_LIBRARIES
    assert any(package.startswith("fonts-") for package in installed)


def test_it_runs_as_a_numeric_non_root_user() -> None:
    user = FINAL.last("USER").value
    assert re.fullmatch(r"[1-9]\d*(:[1-9]\d*)?", user), "a numeric UID (and GID), not root"
    uid = user.split(":")[0]
    assert f"--uid {uid}" in " ".join(FINAL.values("RUN"))
    # USER comes after every RUN: nothing later runs as root.
    keywords = [i.keyword for i in FINAL.instructions]
    assert "RUN" not in keywords[keywords.index("USER") :]


def test_it_writes_only_its_volumes_on_a_read_only_root() -> None:
    volumes = FINAL.last("VOLUME").exec_form()
    assert set(volumes) == {"/tmp", "/data"}
    env = FINAL.env()
    assert env["PYTHONDONTWRITEBYTECODE"] == "1"
    assert env["PYTHONUNBUFFERED"] == "1"
    # Whatever wants a home or a cache directory (fontconfig) gets one on a volume.
    for variable in ("HOME", "XDG_CACHE_HOME", "BILLING_DEV_DATA_DIR"):
        assert any(env[variable].startswith(volume) for volume in volumes), variable
    # The data directory belongs to the user that writes it (created before VOLUME).
    uid = FINAL.last("USER").value.split(":")[0]
    assert f"chown {uid}:" in " ".join(FINAL.values("RUN"))


def test_one_image_whose_command_picks_the_role() -> None:
    assert FINAL.last("ENTRYPOINT").exec_form() == ["billing-fleet"]
    assert FINAL.last("CMD").exec_form() == ["gateway"]
    env = FINAL.env()
    assert env["BILLING_GATEWAY_HOST"] == "0.0.0.0"
    assert env["BILLING_WORKER_HTTP_HOST"] == "0.0.0.0"


# -- the HEALTHCHECK: its Python one-liner, run against a real loopback server ----------------


def healthcheck_code() -> str:
    value = FINAL.last("HEALTHCHECK").value
    options, _, command = value.partition("CMD ")
    assert "--timeout=" in options and "--interval=" in options
    argv = json.loads(command)
    assert argv[:2] == ["python", "-c"], "slim has no curl: the probe is Python"
    return str(argv[2])


class _Probe(BaseHTTPRequestHandler):
    status = 200

    def do_GET(self) -> None:
        self.send_response(self.status if self.path == "/healthz" else 404)
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def probe_server() -> Iterator[HTTPServer]:
    server = HTTPServer(("127.0.0.1", 0), _Probe)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()
    thread.join(timeout=5)


def run_healthcheck(tmp_path: Path, argv: list[str], env: dict[str, str]) -> int:
    """The image's probe with PID 1's arguments read from a file that holds ``argv``."""
    cmdline = tmp_path / "cmdline"
    cmdline.write_bytes(b"\0".join(part.encode() for part in argv) + b"\0")
    code = healthcheck_code()
    assert "'/proc/1/cmdline'" in code
    code = code.replace("'/proc/1/cmdline'", repr(str(cmdline)))
    clean = {k: v for k, v in os.environ.items() if not k.startswith("BILLING_")}
    done = subprocess.run(
        [sys.executable, "-c", code], env={**clean, **env}, capture_output=True, timeout=30
    )
    return done.returncode


ROLE = ["/opt/venv/bin/python", "/opt/venv/bin/billing-fleet"]


@pytest.mark.parametrize(
    ("argv", "variable"),
    [
        (["gateway"], "BILLING_GATEWAY_PORT"),
        (["worker", "entitlement"], "BILLING_WORKER_HTTP_PORT"),
    ],
)
def test_the_healthcheck_probes_the_roles_port(
    tmp_path: Path, probe_server: HTTPServer, argv: list[str], variable: str
) -> None:
    port = str(probe_server.server_address[1])
    assert run_healthcheck(tmp_path, ROLE + argv, {variable: port}) == 0
    _Probe.status = 503
    try:
        assert run_healthcheck(tmp_path, ROLE + argv, {variable: port}) != 0
    finally:
        _Probe.status = 200


def test_the_healthcheck_fails_when_nothing_listens_and_passes_for_one_shots(
    tmp_path: Path, probe_server: HTTPServer
) -> None:
    port = str(probe_server.server_address[1])
    # The gateway's variable set, the worker's port probed: a worker on the wrong port fails.
    unused = {"BILLING_GATEWAY_PORT": port, "BILLING_WORKER_HTTP_PORT": "1"}
    assert run_healthcheck(tmp_path, [*ROLE, "worker", "entitlement"], unused) != 0
    assert run_healthcheck(tmp_path, [*ROLE, "migrate"], {}) == 0


# -- the lock ---------------------------------------------------------------------------------


def locked() -> dict[str, str]:
    pins: dict[str, str] = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, sep, version = line.partition("==")
            assert sep and version, f"constraints.txt pins exact versions: {line!r}"
            pins[canonicalize_name(name)] = version
    return pins


def test_the_lock_pins_every_dependency_of_pyproject_at_a_version_it_accepts() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    pins = locked()
    for spec in project["dependencies"]:
        requirement = Requirement(spec)
        name = canonicalize_name(requirement.name)
        assert name in pins, f"constraints.txt lacks {requirement.name}: regenerate it"
        assert requirement.specifier.contains(pins[name], prereleases=True), (
            f"constraints.txt pins {requirement.name}=={pins[name]}, pyproject wants {spec}"
        )
    # The extras' own dependencies the image needs (faststream[kafka] → aiokafka, ...).
    assert {"aiokafka", "uvloop", "httptools", "cryptography"} <= set(pins)
    assert canonicalize_name(project["name"]) not in pins, "the package itself is not locked"


def test_the_build_context_has_what_the_dockerfile_copies_and_no_local_state() -> None:
    ignored = {
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    }
    assert {".git", "**/.venv", "tests", ".billing-fleet", "build"} <= ignored
    for stage in STAGES:
        for copy in stage.values("COPY"):
            if copy.startswith("--from="):
                continue
            for source in copy.split()[:-1]:
                assert (ROOT / source).exists(), source
                assert source.rstrip("/") not in ignored, f"{source} is in .dockerignore"
