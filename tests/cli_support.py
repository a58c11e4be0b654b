"""The ``billing-fleet`` console script as subprocesses, run as an operator would run it:
one-shot commands, and ``billing-fleet dev`` in the background with its banner and logs."""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import os
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import httpx

SCRIPT = shutil.which("billing-fleet", path=str(Path(sys.executable).parent))
COMMAND = [SCRIPT] if SCRIPT else [sys.executable, "-m", "fleet.cli"]
BANNER_END = "  Ctrl-C"
EXAMPLE_CATALOG = Path(__file__).resolve().parents[1] / "catalog.example.yaml"
# Where commands run unless told: no `.billing-fleet/dev.json` of a dev the developer may
# be running in the repository reaches them.
NEUTRAL_CWD = Path(tempfile.mkdtemp(prefix="billing-fleet-cli-"))
atexit.register(shutil.rmtree, NEUTRAL_CWD, ignore_errors=True)


def clean_env(**extra: str) -> dict[str, str]:
    """This environment without any setting a developer may have exported (a fresh
    terminal), plus ``extra``; the catalog is the repository's (the commands do not run
    in it, see ``NEUTRAL_CWD``)."""
    unprefixed = ("DATABASE_URL", "KAFKA_BOOTSTRAP_SERVERS")
    env = {k: v for k, v in os.environ.items() if not k.startswith("BILLING_")}
    env = {k: v for k, v in env.items() if k not in unprefixed}
    return {"BILLING_ENTITLEMENT_CATALOG_PATH": str(EXAMPLE_CATALOG), **env, **extra}


def run(
    *args: str, env: dict[str, str], cwd: Path | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*COMMAND, *args],
        env=env,
        cwd=cwd or NEUTRAL_CWD,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def children(pid: int) -> list[tuple[int, str]]:
    out = subprocess.run(
        ["ps", "-ww", "-o", "pid=,args=", "--ppid", str(pid)], capture_output=True, text=True
    ).stdout
    return [
        (int(p), args) for p, _, args in (line.strip().partition(" ") for line in out.splitlines())
    ]


def running_args() -> str:
    return subprocess.run(["ps", "-ww", "-eo", "args="], capture_output=True, text=True).stdout


def is_running(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rpartition(")")[2].split()[0] != "Z"


def tail(log: Path) -> str:
    return log.read_text()[-4000:] if log.exists() else ""


@dataclass
class Dev:
    """A running ``billing-fleet dev``: its process, printed banner and stderr log."""

    process: asyncio.subprocess.Process
    banner: list[str]
    log: Path

    def value(self, label: str) -> str:
        """The value of banner line ``label`` (``  label   value``)."""
        for line in self.banner:
            if line.strip().startswith(label):
                return line.strip()[len(label) :].strip()
        raise AssertionError(f"no {label!r} in the banner:\n" + "\n".join(self.banner))

    def command_after(self, heading: str) -> list[str]:
        """The command on the line after the banner line starting with ``heading``."""
        for line, following in zip(self.banner, self.banner[1:], strict=False):
            if line.strip().startswith(heading):
                return shlex.split(following)
        raise AssertionError(f"no {heading!r} in the banner:\n" + "\n".join(self.banner))

    async def stop(self, sig: signal.Signals = signal.SIGINT, timeout: float = 30) -> int:
        self.process.send_signal(sig)
        async with asyncio.timeout(timeout):
            return await self.process.wait()

    async def kill(self) -> None:
        if self.process.returncode is None:
            self.process.kill()
            await self.process.wait()


async def start_dev(env: dict[str, str], log: Path, cwd: Path | None = None) -> Dev:
    """``billing-fleet dev``, once it printed its whole banner (it is then about to serve)."""
    with log.open("wb") as stderr:
        process = await asyncio.create_subprocess_exec(
            *COMMAND, "dev", env=env, cwd=cwd or NEUTRAL_CWD, stdout=subprocess.PIPE, stderr=stderr
        )
    assert process.stdout is not None
    banner: list[str] = []
    try:
        async with asyncio.timeout(60):
            while line := (await process.stdout.readline()).decode():
                banner.append(line.rstrip("\n"))
                if line.startswith(BANNER_END):
                    return Dev(process, banner, log)
    except BaseException:
        if process.returncode is None:
            process.kill()
        await process.wait()
        raise
    await process.wait()
    raise AssertionError(f"dev exited ({process.returncode}) before its banner:\n{tail(log)}")


def stop_all(processes: list[subprocess.Popen[bytes]], timeout: float = 20) -> None:
    """SIGTERM every process, then wait for each; one that outlives ``timeout`` is killed."""
    for process in processes:
        process.terminate()
    for process in processes:
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)


async def wait_ready(base_url: str, timeout: float = 30) -> None:
    """Until the gateway answers /readyz with ready (Kafka and PostgreSQL reached)."""
    async with httpx.AsyncClient(base_url=base_url) as client, asyncio.timeout(timeout):
        while True:
            try:
                if (await client.get("/readyz")).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            await asyncio.sleep(0.1)


async def wait_worker_ready(
    process: subprocess.Popen[bytes], port: int, log: Path, timeout: float = 60
) -> None:
    """Until the worker ``process`` answers /readyz on ``port`` with 200. Fails at once
    if it exited, and on timeout with its last /readyz answer; both with its log's tail
    (a CI failure must say why)."""
    last = "no answer"
    deadline = asyncio.get_running_loop().time() + timeout
    async with httpx.AsyncClient(timeout=2) as client:
        while asyncio.get_running_loop().time() < deadline:
            if process.poll() is not None:
                raise AssertionError(f"worker exited ({process.returncode}):\n{tail(log)}")
            try:
                response = await client.get(f"http://127.0.0.1:{port}/readyz")
            except httpx.HTTPError as exc:
                last = repr(exc)
            else:
                if response.status_code == 200:
                    return
                last = f"{response.status_code} {response.text}"
            await asyncio.sleep(0.1)
    raise AssertionError(f"worker not ready after {timeout:.0f} s ({last}):\n{tail(log)}")


@contextlib.asynccontextmanager
async def running_worker(
    process: subprocess.Popen[bytes], port: int, log: Path
) -> AsyncIterator[subprocess.Popen[bytes]]:
    """The worker ``process``, ready (``wait_worker_ready``), for the block; then SIGTERM
    and exit status 0 within 30 s (killed if it is still running after all)."""
    try:
        await wait_worker_ready(process, port, log)
        yield process
        process.send_signal(signal.SIGTERM)
        code = await asyncio.to_thread(process.wait, 30)
        assert code == 0, tail(log)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(10)
