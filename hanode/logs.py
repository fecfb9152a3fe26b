"""Logging: structlog JSON lines (orjson) for machines, a console renderer for people.

Log calls below the configured level cost one method call (``make_filtering_bound_logger``
turns them into no-ops), so debug logging may stay in hot paths. Standard-library logging
(asyncio, libraries) is routed through the same renderer so every line has one shape.
"""

from __future__ import annotations

import itertools
import logging
import os
import secrets
import sys
from collections.abc import Callable
from typing import Any, TextIO

import orjson
import structlog
from structlog.typing import Processor

__all__ = ["REQUEST_ID_KEY", "configure_logging", "get_logger", "new_request_id"]

REQUEST_ID_KEY = "request_id"

_LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "warn": logging.WARNING,
    "error": logging.ERROR,
    "critical": logging.CRITICAL,
}

# The stdlib handler we installed last, so a second configure_logging() replaces it.
_stdlib_handler: logging.Handler | None = None


def _orjson_dumps(obj: Any, default: Callable[[Any], Any] | None = None, **_: Any) -> str:
    """orjson is several times faster than json; structlog's WriteLogger wants ``str``."""
    return orjson.dumps(obj, default=default, option=orjson.OPT_NON_STR_KEYS).decode()


def configure_logging(level: str = "info", json: bool = True, stream: TextIO | None = None) -> None:
    """Configure structlog (and stdlib logging) once at start-up; calling again replaces it.

    ``stream`` defaults to ``sys.stderr`` as it is *at call time*, so test capture works.
    Loggers are cached on first use for speed: configure before logging anything.
    """
    global _stdlib_handler
    try:
        level_no = _LEVELS[level.lower()]
    except KeyError:
        raise ValueError(f"unknown log level {level!r}; use one of {', '.join(_LEVELS)}") from None
    out = sys.stderr if stream is None else stream

    shared: list[Processor] = [
        structlog.contextvars.merge_contextvars,  # request ids bound per request/connection
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.StackInfoRenderer(),
    ]
    renderer: Processor
    if json:
        # One line per event: tracebacks become a string field instead of spanning lines.
        shared.append(structlog.processors.format_exc_info)
        renderer = structlog.processors.JSONRenderer(serializer=_orjson_dumps)
    else:
        renderer = structlog.dev.ConsoleRenderer(colors=_isatty(out))

    def factory(*args: Any) -> _NamedWriteLogger:
        return _NamedWriteLogger(out, str(args[0]) if args else "")

    structlog.configure(
        processors=[structlog.stdlib.add_logger_name, *shared, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(level_no),
        context_class=dict,
        logger_factory=factory,
        cache_logger_on_first_use=True,
    )

    handler = logging.StreamHandler(out)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[structlog.stdlib.add_logger_name, *shared],
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
        )
    )
    root = logging.getLogger()
    if _stdlib_handler is not None:
        root.removeHandler(_stdlib_handler)
    root.addHandler(handler)
    root.setLevel(level_no)
    _stdlib_handler = handler


class _NamedWriteLogger(structlog.WriteLogger):
    """A WriteLogger with a ``name``, which ``add_logger_name`` puts in every line."""

    def __init__(self, file: TextIO, name: str) -> None:
        super().__init__(file)
        self.name = name


def _isatty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


def get_logger(name: str) -> Any:
    """A lazy logger whose lines carry ``logger=name``; safe to create at import time."""
    return structlog.get_logger(name)


# -- request ids --------------------------------------------------------------------------------
# A random per-process prefix plus a hex counter: unique across nodes and restarts without
# paying for uuid4 (os.urandom + formatting) on every request. ``next()`` on itertools.count
# is atomic under the GIL, so threads may share it.

_prefix = ""
_counter: itertools.count[int] = itertools.count(1)


def _reset_request_ids() -> None:
    """New prefix and counter; also run in forked children so they never reuse parent ids."""
    global _prefix, _counter
    _prefix = f"{secrets.token_hex(4)}{os.getpid() & 0xFFFF:04x}-"
    _counter = itertools.count(1)


_reset_request_ids()
os.register_at_fork(after_in_child=_reset_request_ids)


def new_request_id() -> str:
    """A short unique id such as ``'9f1c2a7b3e01-1a'`` for correlating a request's log lines."""
    return f"{_prefix}{next(_counter):x}"
