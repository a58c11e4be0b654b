"""bench.cpu: which part of a run a process is, and what a phase's CPU comes to per event."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from bench import cpu
from bench.cpu import BENCH, REST, Sample, Usage

TICK = cpu.TICKS_PER_S


@pytest.mark.parametrize(
    ("argv", "part"),
    [
        (["/usr/lib/postgresql/15/bin/postgres", "-D", "/data"], "PostgreSQL"),
        (["postgres: postgres bench_e2e [local] idle"], "PostgreSQL"),
        (["/root/.calfkit/bin/tansu-v0.6.0", "broker"], "Tansu broker"),
        (["/venv/bin/python", "/venv/bin/billing-fleet", "gateway"], "gateway"),
        (["/venv/bin/python", "/venv/bin/billing-fleet", "worker", "invoice"], "worker invoice"),
        (["/usr/bin/wrk", "-t1", "http://127.0.0.1/"], cpu.CLIENTS),
        (["/venv/bin/python", "-m", "bench.e2e_client", "send"], cpu.CLIENTS),
        (["/venv/bin/python", "-m", "bench.mail_sink", "--port", "1"], cpu.RELAY),
        (["/venv/bin/python", "-m", "bench", "e2e"], cpu.BENCH),
        (["/usr/sbin/redis-server", "127.0.0.1:6379"], None),
        ([], None),
    ],
)
def test_a_process_is_told_by_its_command_line(argv: list[str], part: str | None) -> None:
    assert cpu.part_of(argv) == part


def _usage() -> Usage:
    before = Sample({"1": ("gateway", 10), "2": ("PostgreSQL", 0), "9": ("gateway", 5)}, 100, 0.0)
    after = Sample(
        {
            "1": ("gateway", 10 + 2 * TICK),  # 2 s
            "2": ("PostgreSQL", 1 * TICK),  # 1 s
            "3": ("PostgreSQL", TICK // 2),  # started during the phase: 0.5 s
            "4": (cpu.CLIENTS, 1 * TICK),  # 1 s, outside the fleet
        },
        100 + 5 * TICK,  # the machine: 5 s busy, 0.5 s of it in no process of ours
        4.0,
    )
    return Usage.between(before, after)


def test_a_phase_is_each_parts_cpu_and_the_rest_of_the_machines() -> None:
    usage = _usage()
    assert usage.seconds == {
        "gateway": 2.0,
        "PostgreSQL": 1.5,
        cpu.CLIENTS: 1.0,
        REST: 0.5,
    }
    assert (usage.busy_s, usage.wall_s) == (5.0, 4.0)


def test_the_lines_give_the_cost_per_event_and_the_rate_it_allows() -> None:
    lines = _usage().lines(1_000, "webhook")
    cpus = os.cpu_count() or 1
    assert lines[0].startswith(f"CPU over 4.0 s: 5.0 s of the {cpus} CPUs' {cpus * 4:.1f} s")
    assert (
        "per webhook, ms: gateway 2.00, PostgreSQL 1.50, load clients 1.00, the rest 0.50"
        in (lines[0])
    )
    # The fleet: all but the load clients, 4 ms per webhook.
    assert f"4.00 ms per webhook; at that cost {cpus} CPUs carry at most " in lines[1]
    assert lines[1].endswith(f"{cpus * 250:,} webhooks/s")


def test_an_exited_child_moves_from_the_drivers_figure_to_its_own_part() -> None:
    usage = Usage({"gateway": 2.0, BENCH: 3.0, REST: 0.5}, busy_s=5.5, wall_s=4.0)
    # The relay's 2.5 s were all added to the driver once it was waited for; 0.5 s of
    # them were spent before the phase.
    usage.exited(cpu.RELAY, 2.5, 2.0)
    assert usage.seconds == {"gateway": 2.0, cpu.RELAY: 2.0, REST: 1.0, BENCH: 0.5}
    usage.exited(cpu.CLIENTS, 0.5)  # started in the phase: all of it
    assert usage.seconds == {"gateway": 2.0, cpu.RELAY: 2.0, REST: 1.0, cpu.CLIENTS: 0.5}


def test_no_events_no_lines() -> None:
    assert _usage().lines(0, "webhook") == []


def test_a_live_sample_finds_a_running_client_and_the_machines_time() -> None:
    # A process whose command line names the bench's client, as `bench e2e` starts them.
    child = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; time.sleep(30)", "bench.e2e_client"]
    )
    try:
        first = cpu.sample()
        sum(range(200_000))
        second = cpu.sample()
    finally:
        child.kill()
        child.wait()
    assert second.processes[str(child.pid)][0] == cpu.CLIENTS
    assert second.busy >= first.busy
    assert second.at > first.at
