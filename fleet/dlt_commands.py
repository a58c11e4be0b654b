"""``billing-fleet dlt list|show|replay``: the dead-letter topics, for operators.

Kafka, and PostgreSQL where the command reads or records replays, are checked first: one
not there is one line on stderr and exit status 1, as is one lost while the command runs.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from aiokafka.errors import KafkaError
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

from billing_fleet.kafka_admin import broker_reachable
from billing_fleet.kafka_security import kafka_security
from billing_fleet.logs import one_line
from fleet.preflight import (
    CONNECT_TIMEOUT_SECONDS,
    DATABASE_ERRORS,
    Unavailable,
    check_database,
    failure_reason,
)
from fleet.settings import DevSettings

Command = Callable[[argparse.Namespace, DevSettings], int]
T = TypeVar("T")

# What a server that is not there (or stops answering) raises, past the checks.
SERVER_ERRORS = (*DATABASE_ERRORS, KafkaError)


def add_dlt_parser(commands: Any, dispatch: Command) -> None:
    dlt = commands.add_parser("dlt", help="list, show and replay dead letters")
    dlt.set_defaults(handler=dispatch)
    sub = dlt.add_subparsers(dest="dlt_command", required=True, metavar="ACTION")

    listing = sub.add_parser(
        "list", help="per dead-letter topic: counts, then each letter (id, P:O, error class)"
    )
    listing.add_argument("--worker", help="only this worker's dead-letter topics")
    listing.set_defaults(dlt_handler=_list)

    show = sub.add_parser("show", help="one dead letter: value and all headers")
    show.add_argument("topic")
    show.add_argument(
        "letter", metavar="ID|P:O", help="the letter's id or PARTITION:OFFSET, as `dlt list` prints"
    )
    show.add_argument(
        "offset", nargs="?", metavar="OFFSET", help="the older form: PARTITION OFFSET"
    )
    show.set_defaults(dlt_handler=_show)

    replay = sub.add_parser(
        "replay", help="re-publish dead letters to their origin topic (original bytes)"
    )
    replay.add_argument("topic")
    replay.add_argument(
        "--offset",
        action="append",
        default=[],
        metavar="P:O",
        help="partition:offset to replay (repeatable; replayed even if it was before)",
    )
    replay.add_argument(
        "--id",
        action="append",
        default=[],
        dest="ids",
        metavar="ID",
        help="id of a letter to replay, as `dlt list` prints it (repeatable; replayed even "
        "if it was before)",
    )
    replay.add_argument(
        "--all", action="store_true", help="every message of the topic not replayed yet"
    )
    replay.set_defaults(dlt_handler=_replay)


def _run(settings: DevSettings, work: Callable[[], Awaitable[T]], *, database: bool) -> T:
    """``work()`` once Kafka (and PostgreSQL, with ``database``) answers; ``Unavailable``
    saying which one does not."""
    bootstrap = settings.kafka_bootstrap_servers
    assert bootstrap
    # Its reconnect errors would come before our one line; the line says it all.
    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)

    async def checked() -> T:
        if not await broker_reachable(
            bootstrap, timeout=CONNECT_TIMEOUT_SECONDS, security=kafka_security(settings)
        ):
            raise Unavailable(f"Kafka at {bootstrap} does not answer (KAFKA_BOOTSTRAP_SERVERS)")
        if database and settings.database_url:
            await check_database(settings.database_url)
        return await work()

    return asyncio.run(checked())


def _failed(action: str, exc: BaseException) -> int:
    if isinstance(exc, KafkaError):
        reason = f"Kafka failed (KAFKA_BOOTSTRAP_SERVERS): {one_line(exc)}"
    else:
        reason = failure_reason(exc)
    print(f"billing-fleet dlt {action}: {reason}", file=sys.stderr)
    return 1


def _list(args: argparse.Namespace, settings: DevSettings) -> int:
    from workers.runtime.dlt_admin import list_dead_letters

    assert settings.kafka_bootstrap_servers
    bootstrap = settings.kafka_bootstrap_servers
    try:
        summaries = _run(
            settings,
            lambda: list_dead_letters(
                bootstrap, settings.database_url, args.worker, kafka_security(settings)
            ),
            database=True,
        )
    except SERVER_ERRORS as exc:
        return _failed("list", exc)
    if not summaries:
        print("no dead-letter topics")
    for summary in summaries:
        classes = ", ".join(f"{name}={n}" for name, n in summary.by_error_class.most_common())
        print(f"{summary.topic}\tmessages={summary.messages}\treplayed={summary.replayed}")
        if classes:
            print(f"  by error class: {classes}")
        for status in summary.letters:
            letter = status.letter
            print(
                f"  {letter.letter_id or '-'}\t{letter.position}"
                f"\t{letter.header('dlt_error_class') or 'unknown'}"
                f"\t{'replayed' if status.replayed else 'not replayed'}"
            )
    return 0


def _show(args: argparse.Namespace, settings: DevSettings) -> int:
    from workers.runtime.dlt_admin import show_dead_letter

    assert settings.kafka_bootstrap_servers
    ref = f"{args.letter}:{args.offset}" if args.offset is not None else args.letter
    bootstrap = settings.kafka_bootstrap_servers
    try:
        letter = _run(
            settings,
            lambda: show_dead_letter(bootstrap, args.topic, ref, kafka_security(settings)),
            database=False,
        )
    except LookupError as exc:
        print(f"billing-fleet dlt show: {exc}", file=sys.stderr)
        return 1
    except SERVER_ERRORS as exc:
        return _failed("show", exc)
    print(f"topic {letter.topic} partition {letter.partition} offset {letter.offset}")
    print(f"id {letter.letter_id or '- (written before dead letters had ids)'}")
    print(f"key {letter.key.decode(errors='replace') if letter.key is not None else '-'}")
    print("headers")
    for name, value in letter.headers:
        print(f"  {name}: {value.decode(errors='replace')}")
    print("value")
    print(letter.value.decode(errors="replace"))
    return 0


def _replay(args: argparse.Namespace, settings: DevSettings) -> int:
    from workers.runtime.dlt_admin import parse_offsets, replay_dead_letters

    assert settings.kafka_bootstrap_servers
    bootstrap, database_url = settings.kafka_bootstrap_servers, settings.database_url
    if not database_url:
        print("billing-fleet dlt replay: set DATABASE_URL (replays are recorded)", file=sys.stderr)
        return 2
    if not args.offset and not args.ids and not args.all:
        print(
            "billing-fleet dlt replay: pass --id ID or --offset P:O (repeatable), or --all",
            file=sys.stderr,
        )
        return 2
    try:
        offsets = parse_offsets(args.offset)
    except ValueError as exc:
        print(f"billing-fleet dlt replay: {exc}", file=sys.stderr)
        return 2
    progress = Progress(
        TextColumn("replaying"), BarColumn(), MofNCompleteColumn(), console=Console(stderr=True)
    )
    bar = progress.add_task("replay", total=None)

    def selected(total: int) -> None:
        # Shown from here on only: a refusal before (no server, an unknown id) is one line.
        progress.update(bar, total=total)
        progress.start()

    try:
        try:
            replayed = _run(
                settings,
                lambda: replay_dead_letters(
                    bootstrap,
                    database_url,
                    args.topic,
                    offsets=offsets,
                    ids=args.ids,
                    replay_all=args.all,
                    on_selected=selected,
                    on_replayed=lambda letter: progress.advance(bar),
                    security=kafka_security(settings),
                ),
                database=True,
            )
        finally:
            if progress.live.is_started:
                progress.stop()
    except (LookupError, ValueError) as exc:
        print(f"billing-fleet dlt replay: {exc}", file=sys.stderr)
        return 1
    except SERVER_ERRORS as exc:
        return _failed("replay", exc)
    for letter in replayed:
        origin = letter.header("dlt_origin_topic")
        print(f"replayed {letter.topic} {letter.ref} ({letter.position}) -> {origin}")
    print(f"{len(replayed)} replayed")
    return 0
