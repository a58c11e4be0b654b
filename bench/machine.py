"""The machine a benchmark ran on, as its report's header states it.

This VM's speed changes from day to day (a plain Python loop has taken from under 1 s to
over 2.5 s), and every figure here shares two cores with its ceiling, its clients and its
servers: a report quotes the loop's time beside its CPUs, so runs of different days can be
told apart. The loop does not see all of it: on some days system calls and loopback
round trips are several times slower while the loop is not, and the fleet, which lives
on them, is too; so the header times one of each as well. ``described()`` times them
once, when first called (``bench`` calls it before any server starts, on a machine still
quiet).
"""

from __future__ import annotations

import os
import socket
import threading
import time
from functools import cache
from typing import Final

LOOP_ADDITIONS: Final = 10**7
SYSTEM_CALLS: Final = 100_000
ROUND_TRIPS: Final = 2_000


def _loop_seconds() -> float:
    """The best of three runs of a pure-Python loop of ``LOOP_ADDITIONS`` additions."""
    best = float("inf")
    for _ in range(3):
        started, total = time.perf_counter(), 0
        for i in range(LOOP_ADDITIONS):
            total += i
        best = min(best, time.perf_counter() - started)
    return best


def _system_call_ns() -> float:
    """The best of three runs' mean time of ``getppid()``, about the cheapest call."""
    best = float("inf")
    for _ in range(3):
        started = time.perf_counter()
        for _ in range(SYSTEM_CALLS):
            os.getppid()
        best = min(best, time.perf_counter() - started)
    return best / SYSTEM_CALLS * 1e9


def _echo(server: socket.socket) -> None:
    conn, _ = server.accept()
    with conn:
        while data := conn.recv(64):
            conn.sendall(data)


def _round_trip_us() -> float:
    """The best of three runs' mean round trip of one byte over loopback TCP to an echo
    thread (each wakes the other, as a client and a server do)."""
    with socket.create_server(("127.0.0.1", 0)) as server:
        echo = threading.Thread(target=_echo, args=(server,), daemon=True)
        echo.start()
        with socket.create_connection(server.getsockname()) as conn:
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            best = float("inf")
            for _ in range(3):
                started = time.perf_counter()
                for _ in range(ROUND_TRIPS):
                    conn.sendall(b"x")
                    conn.recv(64)
                best = min(best, time.perf_counter() - started)
        echo.join(timeout=5)
    return best / ROUND_TRIPS * 1e6


@cache
def described() -> str:
    return (
        f"{os.cpu_count()} CPUs (a Python loop of 10^7 additions: {_loop_seconds():.2f} s; "
        f"a system call: {_system_call_ns():,.0f} ns; a loopback round trip: "
        f"{_round_trip_us():,.0f} µs)"
    )
