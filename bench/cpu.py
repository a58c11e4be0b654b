"""Where a benchmark phase's CPU went, per part of the fleet, read from ``/proc``.

An end-to-end figure that misses its target on two shared cores is either the code's
cost or the machine's speed of the day; the CPU time of each process over the phase,
divided by the events it carried, says which: its cost per event, and how many events a
second the two cores could take at that cost. Processes are told apart by their command
lines (the fleet's commands, PostgreSQL's backends, the broker, the bench's own clients);
a process that exited is counted in its parent's figure once waited for (the bench's
clients and relay report their own CPU instead, ``Usage.exited``), and the machine's busy
time not found in them (the kernel's network work, other services) is "the rest".
"""

from __future__ import annotations

import os
import resource
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

TICKS_PER_S: Final = os.sysconf("SC_CLK_TCK")
REST: Final = "the rest"
# Stand-ins for callers on other machines: counted, but not in the fleet's capacity.
CLIENTS: Final = "load clients"
RELAY: Final = "SMTP relay"
BENCH: Final = "bench driver"
_OUTSIDE_FLEET: Final = (CLIENTS, RELAY, BENCH)
_PROC: Final = Path("/proc")


def own_cpu_seconds() -> float:
    """This process's CPU time so far (user and system)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def process_cpu_seconds(pid: int) -> float:
    """Process ``pid``'s CPU time so far (with its children's that exited); 0 if gone."""
    found = _process_ticks(str(pid))
    return found[1] / TICKS_PER_S if found is not None else 0.0


def part_of(argv: list[str]) -> str | None:
    """The part of the run a process with command line ``argv`` is; None: not one."""
    if not argv:
        return None
    program = os.path.basename(argv[0])
    if program == "postgres" or argv[0].startswith("postgres:"):
        return "PostgreSQL"
    if program.startswith("tansu"):
        return "Tansu broker"
    if program == "wrk" or "bench.e2e_client" in argv:
        return CLIENTS
    if "bench.mail_sink" in argv:
        return RELAY
    for n, arg in enumerate(argv):
        if os.path.basename(arg) == "billing-fleet":
            return " ".join(argv[n + 1 : n + 3]) or "billing-fleet"
    if argv[1:3] == ["-m", "bench"]:
        return BENCH
    return None


def _process_ticks(pid: str) -> tuple[list[str], int] | None:
    try:
        argv = (_PROC / pid / "cmdline").read_bytes().decode(errors="replace").split("\0")
        stat = (_PROC / pid / "stat").read_text()
    except OSError:  # exited meanwhile
        return None
    # utime, stime, and those of its children that exited and were waited for (a
    # PostgreSQL backend's, or a bench client's, ended during the phase)
    fields = stat.rsplit(")", 1)[1].split()
    return [arg for arg in argv if arg], sum(int(v) for v in fields[11:15])


def _machine_busy_ticks() -> int:
    """All CPUs' ticks not idle, waiting on I/O, or stolen by the hypervisor."""
    values = [int(v) for v in (_PROC / "stat").read_text().split("\n", 1)[0].split()[1:]]
    user, nice, system, _idle, _iowait, irq, softirq = values[:7]
    return user + nice + system + irq + softirq


@dataclass(frozen=True)
class Sample:
    processes: dict[str, tuple[str, int]]  # pid -> (part, CPU ticks so far)
    busy: int
    at: float


def sample() -> Sample:
    processes = {}
    for entry in _PROC.iterdir():
        if entry.name.isdigit() and (found := _process_ticks(entry.name)) is not None:
            argv, ticks = found
            if (part := part_of(argv)) is not None:
                processes[entry.name] = (part, ticks)
    return Sample(processes, _machine_busy_ticks(), time.monotonic())


@dataclass
class Usage:
    """CPU seconds per part between two samples, and the machine's over the same span."""

    seconds: dict[str, float] = field(default_factory=dict)
    busy_s: float = 0.0
    wall_s: float = 0.0

    @classmethod
    def between(cls, before: Sample, after: Sample) -> Usage:
        ticks: Counter[str] = Counter()
        for pid, (part, now) in after.processes.items():
            earlier = before.processes.get(pid)
            # A process started during the phase counts from zero.
            ticks[part] += now - (earlier[1] if earlier and earlier[0] == part else 0)
        busy = after.busy - before.busy
        ticks[REST] = max(0, busy - sum(ticks.values()))
        seconds = {part: n / TICKS_PER_S for part, n in ticks.most_common() if n > 0}
        return cls(seconds, busy / TICKS_PER_S, after.at - before.at)

    def exited(self, part: str, total_s: float, in_phase_s: float | None = None) -> None:
        """A child of the bench driver that exited during the phase, having used
        ``total_s`` of CPU in all and ``in_phase_s`` of it in the phase (all, when it
        started in the phase): once waited for, all of it was in the driver's figure;
        now the phase's part is ``part``'s, and what it used before the phase is no one's."""
        seconds = dict(self.seconds)
        seconds[BENCH] = max(0.0, seconds.get(BENCH, 0.0) - total_s)
        seconds[part] = seconds.get(part, 0.0) + (total_s if in_phase_s is None else in_phase_s)
        seconds.pop(REST, None)
        seconds[REST] = max(0.0, self.busy_s - sum(seconds.values()))
        ordered = sorted(seconds.items(), key=lambda item: -item[1])
        self.seconds = {name: s for name, s in ordered if s > 0}

    def lines(self, events: int, what: str) -> list[str]:
        """The report's lines: the machine's use, the cost per one of ``events``, and the
        rate of them the fleet could carry at that cost on this machine's CPUs."""
        if events <= 0 or self.wall_s <= 0:
            return []
        cpus = os.cpu_count() or 1
        per_ms = {part: s * 1000 / events for part, s in self.seconds.items()}
        fleet_ms = sum(ms for part, ms in per_ms.items() if part not in _OUTSIDE_FLEET)
        parts = ", ".join(f"{part} {ms:.2f}" for part, ms in per_ms.items())
        lines = [
            f"CPU over {self.wall_s:.1f} s: {self.busy_s:.1f} s of the {cpus} CPUs' "
            f"{cpus * self.wall_s:.1f} s ({self.busy_s / (cpus * self.wall_s):.0%} busy); "
            f"per {what}, ms: {parts}",
        ]
        if fleet_ms > 0:
            lines.append(
                f"  the fleet's (all but the load clients, the relay and the bench driver): "
                f"{fleet_ms:.2f} ms per {what}; at that cost {cpus} CPUs carry at most "
                f"{cpus * 1000 / fleet_ms:,.0f} {what}s/s"
            )
        return lines


@contextmanager
def measured() -> Iterator[Usage]:
    """The CPU used while the block runs, filled in when it ends."""
    usage, before = Usage(), sample()
    try:
        yield usage
    finally:
        done = Usage.between(before, sample())
        usage.seconds, usage.busy_s, usage.wall_s = done.seconds, done.busy_s, done.wall_s
