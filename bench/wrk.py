"""Running ``wrk`` (a separate load-generator process) and reading its report."""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

INSTALL_HINT = "wrk is not installed: apt-get install -y wrk (Debian/Ubuntu package `wrk`)"

_UNITS_MS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3, "h": 3600e3}
_TIME = r"([\d.]+)(us|ms|s|m|h)"


class WrkError(RuntimeError):
    """wrk is missing, failed, or printed a report we cannot read."""


@dataclass(frozen=True)
class WrkResult:
    requests: int
    requests_per_s: float
    p50_ms: float
    p99_ms: float
    non_2xx_3xx: int
    socket_errors: int
    report: str

    @property
    def failed(self) -> int:
        return self.non_2xx_3xx + self.socket_errors


def executable() -> str:
    path = shutil.which("wrk")
    if path is None:
        raise WrkError(INSTALL_HINT)
    return path


def _lua_string(value: str) -> str:
    """A Lua long-bracket literal; the level is picked so ``value`` cannot close it.

    Callers keep a space before it inside brackets: ``t[[[k]]]`` parses as a call.
    """
    level = 0
    while f"]{'=' * level}]" in value:
        level += 1
    eq = "=" * level
    return f"[{eq}[{value}]{eq}]"


# LuaJIT's ffi gives a wall clock; plain Lua has only whole seconds (os.time).
_PACING = """
local ffi = require("ffi")
ffi.cdef[[
typedef struct { long tv_sec; long tv_usec; } bench_timeval;
int gettimeofday(bench_timeval *tv, void *tz);
]]
local tv = ffi.new("bench_timeval")
local function now_ms()
  ffi.C.gettimeofday(tv, nil)
  return tonumber(tv.tv_sec) * 1000 + tonumber(tv.tv_usec) / 1000
end
local next_slot = 0
-- Called before each connection's next request: claim the thread's next send slot, so
-- all connections together send one request per interval. A late slot is not made up.
function delay()
  local now = now_ms()
  next_slot = math.max(next_slot + interval_ms, now)
  return next_slot - now
end
"""


def post_script(
    body_path: Path, headers: Mapping[str, str], *, rate_per_thread: float | None = None
) -> str:
    """Lua for wrk: POST the bytes of ``body_path`` with ``headers``, optionally paced."""
    lines = [
        'wrk.method = "POST"',
        f'local f = assert(io.open({_lua_string(str(body_path))}, "rb"))',
        'wrk.body = f:read("*a")',
        "f:close()",
    ]
    lines += [f"wrk.headers[ {_lua_string(k)} ] = {_lua_string(v)}" for k, v in headers.items()]
    if rate_per_thread is not None:
        lines += [f"interval_ms = {1000.0 / rate_per_thread!r}", _PACING]
    return "\n".join(lines) + "\n"


def get_script(headers: Mapping[str, str], *, rate_per_thread: float | None = None) -> str:
    """Lua for wrk: GET the URL with ``headers``, optionally paced."""
    lines = [f"wrk.headers[ {_lua_string(k)} ] = {_lua_string(v)}" for k, v in headers.items()]
    if rate_per_thread is not None:
        lines += [f"interval_ms = {1000.0 / rate_per_thread!r}", _PACING]
    return "\n".join(lines) + "\n"


def run(
    url: str, script: Path, *, connections: int, duration_s: int, threads: int = 1
) -> WrkResult:
    command = [
        executable(),
        f"-t{threads}",
        f"-c{connections}",
        f"-d{duration_s}s",
        "--timeout=5s",
        "--latency",
        "-s",
        str(script),
        url,
    ]
    done = subprocess.run(
        command, capture_output=True, text=True, timeout=duration_s + 30, check=False
    )
    if done.returncode != 0:
        raise WrkError(f"{' '.join(command)} exited {done.returncode}:\n{done.stderr}")
    return parse(done.stdout)


def _ms(value: str, unit: str) -> float:
    return float(value) * _UNITS_MS[unit]


def _search(pattern: str, report: str) -> re.Match[str]:
    match = re.search(pattern, report, re.MULTILINE)
    if match is None:
        raise WrkError(f"no {pattern!r} in the wrk report:\n{report}")
    return match


def parse(report: str) -> WrkResult:
    p50 = _search(rf"^\s+50%\s+{_TIME}$", report)
    p99 = _search(rf"^\s+99%\s+{_TIME}$", report)
    # Both lines are printed only when non-zero.
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", report)
    errors = re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", report
    )
    return WrkResult(
        requests=int(_search(r"^\s+(\d+) requests in ", report).group(1)),
        requests_per_s=float(_search(r"^Requests/sec:\s+([\d.]+)", report).group(1)),
        p50_ms=_ms(*p50.groups()),
        p99_ms=_ms(*p99.groups()),
        non_2xx_3xx=int(non_2xx.group(1)) if non_2xx else 0,
        socket_errors=sum(map(int, errors.groups())) if errors else 0,
        report=report,
    )
