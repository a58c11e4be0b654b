"""``.billing-fleet/dev.json``: what a running dev tells other commands, and when not."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from fleet import dev_state
from fleet.dev_state import DevAlreadyRunning, DevState
from tests.fleet_settings import FleetSettings

STATE = DevState(
    pid=os.getpid(),
    kafka_bootstrap_servers="127.0.0.1:19092",
    database_url="postgresql://postgres:@/postgres?host=/tmp/dev",
    gateway_host="127.0.0.1",
    gateway_port=18000,
    gateway_url="http://127.0.0.1:18000",
    stripe_webhook_secret="whsec_generated",
)


def test_a_running_dev_is_read_and_its_file_is_private_and_removed(tmp_path: Path) -> None:
    with dev_state.hold(tmp_path):
        dev_state.publish(tmp_path, STATE)

        assert dev_state.read(tmp_path) == STATE
        assert (tmp_path / "dev.json").stat().st_mode & 0o777 == 0o600

    assert not (tmp_path / "dev.json").exists()
    assert dev_state.read(tmp_path) is None


def test_the_file_of_a_killed_dev_is_stale(tmp_path: Path) -> None:
    """A dev killed hard cannot remove its file; its lock died with it."""
    holder = textwrap.dedent(
        f"""
        import sys, time
        from pathlib import Path
        from fleet import dev_state
        from tests.unit.test_dev_state import STATE
        with dev_state.hold(Path({str(tmp_path)!r})):
            dev_state.publish(Path({str(tmp_path)!r}), STATE)
            print("ready", flush=True)
            time.sleep(60)
        """
    )
    process = subprocess.Popen(
        [sys.executable, "-c", holder], stdout=subprocess.PIPE, text=True, cwd=Path.cwd()
    )
    try:
        assert process.stdout is not None and process.stdout.readline() == "ready\n"
        running = dev_state.read(tmp_path)
        assert running is not None and running.pid == process.pid  # STATE, made over there
        with (
            pytest.raises(
                DevAlreadyRunning, match=f"another billing-fleet dev \\(pid {process.pid}"
            ),
            dev_state.hold(tmp_path),
        ):
            pass
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait()

    assert (tmp_path / "dev.json").exists()
    assert dev_state.read(tmp_path) is None
    with dev_state.hold(tmp_path):  # and a new dev may start there
        pass


def test_only_unset_variables_are_filled(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABASE_URL", "postgresql://db.example/billing")
    monkeypatch.setenv("BILLING_DEV_DATA_DIR", str(tmp_path))
    with dev_state.hold(tmp_path):
        dev_state.publish(tmp_path, STATE)

        settings = dev_state.fill_from_dev(FleetSettings())

    assert settings.database_url == "postgresql://db.example/billing"  # the variable wins
    assert settings.kafka_bootstrap_servers == STATE.kafka_bootstrap_servers
    assert (settings.gateway_host, settings.gateway_port) == ("127.0.0.1", 18000)
    assert [s.get_secret_value() for s in settings.stripe_webhook_secrets] == ["whsec_generated"]


def test_a_configured_webhook_secret_is_not_in_the_file(tmp_path: Path) -> None:
    state = DevState(**{**STATE.__dict__, "stripe_webhook_secret": None})
    with dev_state.hold(tmp_path):
        dev_state.publish(tmp_path, state)

        settings = dev_state.fill_from_dev(FleetSettings(dev_data_dir=tmp_path))

    assert settings.stripe_webhook_secrets == []
