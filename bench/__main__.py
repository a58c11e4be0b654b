"""``python -m bench NAME``: run one benchmark."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True, metavar="BENCHMARK")
    ingress = commands.add_parser("ingress", help="webhook ingress vs. its ASGI and Kafka ceilings")
    ingress.add_argument("--duration", type=int, default=8, help="seconds per wrk run")
    ingress.add_argument("--connections", type=int, default=32, help="wrk connections")
    ingress.add_argument("--messages", type=int, default=50_000, help="raw produce messages")
    ingress.add_argument("--rate", type=int, default=1_000, help="fixed-rate run, req/s")
    args = parser.parse_args(argv)

    from bench import ingress as bench_ingress

    try:
        return bench_ingress.run(
            duration_s=args.duration,
            connections=args.connections,
            messages=args.messages,
            rate=args.rate,
        )
    except KeyboardInterrupt:
        print("bench: interrupted; servers stopped", file=sys.stderr)
        return 130
    except RuntimeError as exc:  # a run that did not measure what it claims
        print(f"bench {args.command}: FAILED: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
