"""`hanodectl`: look at a running node. One-line errors and non-zero exits, never tracebacks."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import urllib.error
import urllib.request
from typing import Any

from hanode.cli.render import event_line, status_table

DEFAULT_ENDPOINT = "127.0.0.1:9100"


class CtlError(Exception):
    pass


def _get(endpoint: str, path: str, timeout: float) -> Any:
    url = f"http://{endpoint}{path}"
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        raise CtlError(f"{url}: HTTP {exc.code}") from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise CtlError(f"cannot reach hanode at {endpoint}: {reason}") from None
    except json.JSONDecodeError:
        raise CtlError(f"{url}: answer is not JSON (is this a hanode ops endpoint?)") from None


def _cmd_status(args: argparse.Namespace) -> int:
    doc = _get(args.endpoint, "/status", args.timeout)
    if args.json:
        print(json.dumps(doc, indent=2, sort_keys=True))
    else:
        print(status_table(doc))
    return 0


def _cmd_events(args: argparse.Namespace) -> int:
    after = 0
    deadline = time.monotonic() + args.follow_for if args.follow_for else None
    while True:
        events = _get(args.endpoint, f"/events?after={after}", args.timeout)["events"]
        for event in events:
            print(json.dumps(event) if args.json else event_line(event), flush=True)
            after = max(after, int(event["seq"]))
        if not args.follow or (deadline is not None and time.monotonic() >= deadline):
            return 0
        time.sleep(1.0)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hanodectl", description="Operate a hanode cluster.")
    parser.add_argument(
        "--endpoint",
        default=os.environ.get("HANODE_ENDPOINT", DEFAULT_ENDPOINT),
        help="HOST:PORT of a node's ops endpoint (env HANODE_ENDPOINT)",
    )
    parser.add_argument("--timeout", type=float, default=5.0, help="seconds per call")
    sub = parser.add_subparsers(dest="command", required=True)
    status = sub.add_parser("status", help="nodes and replicas at a glance")
    status.add_argument("--json", action="store_true", help="one JSON object, for scripts")
    status.set_defaults(func=_cmd_status)
    events = sub.add_parser("events", help="recent events")
    events.add_argument("--follow", action="store_true", help="keep printing new events")
    events.add_argument("--follow-for", type=float, default=0.0, help=argparse.SUPPRESS)
    events.add_argument("--json", action="store_true")
    events.set_defaults(func=_cmd_events)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except CtlError as exc:
        print(f"hanodectl: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
