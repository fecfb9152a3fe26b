"""Logging setup: JSON lines parse, carry the bound request id, and respect the level."""

from __future__ import annotations

import io
import logging
import os
import threading
from collections.abc import Iterator
from typing import Any

import orjson
import pytest
import structlog

from hanode.logs import REQUEST_ID_KEY, configure_logging, get_logger, new_request_id


@pytest.fixture(autouse=True)
def _reset_logging() -> Iterator[None]:
    """Give other tests back the logging they had: root handlers, root level, structlog."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    structlog.contextvars.clear_contextvars()
    yield
    structlog.contextvars.clear_contextvars()
    structlog.reset_defaults()
    root.handlers[:] = handlers
    root.setLevel(level)


def lines_of(stream: io.StringIO) -> list[dict[str, Any]]:
    return [orjson.loads(line) for line in stream.getvalue().splitlines()]


def test_json_line_has_standard_fields() -> None:
    out = io.StringIO()
    configure_logging("info", stream=out)
    get_logger("hanode.test").info("replica_up", replica="r1", weight=0.5)
    (line,) = lines_of(out)
    assert line["event"] == "replica_up"
    assert line["level"] == "info"
    assert line["logger"] == "hanode.test"
    assert line["replica"] == "r1"
    assert line["weight"] == 0.5
    assert line["timestamp"].endswith("Z")
    assert "T" in line["timestamp"]
    assert out.getvalue().endswith("\n")


def test_request_id_bound_via_contextvars_is_in_every_line() -> None:
    out = io.StringIO()
    configure_logging("debug", stream=out)
    log = get_logger("hanode.router")
    rid = new_request_id()
    structlog.contextvars.bind_contextvars(**{REQUEST_ID_KEY: rid})
    log.info("request_start")
    log.debug("picked", replica="r1")
    log.warning("slow")
    structlog.contextvars.unbind_contextvars(REQUEST_ID_KEY)
    log.info("unrelated")
    lines = lines_of(out)
    assert [ln.get(REQUEST_ID_KEY) for ln in lines] == [rid, rid, rid, None]


def test_bound_contextvars_context_manager_scopes_the_id() -> None:
    out = io.StringIO()
    configure_logging("info", stream=out)
    log = get_logger("x")
    with structlog.contextvars.bound_contextvars(request_id="abc"):
        log.info("inside")
    log.info("outside")
    assert [ln.get("request_id") for ln in lines_of(out)] == ["abc", None]


def test_level_filtering() -> None:
    out = io.StringIO()
    configure_logging("warning", stream=out)
    log = get_logger("x")
    log.debug("d")
    log.info("i")
    log.warning("w")
    log.error("e")
    assert [ln["event"] for ln in lines_of(out)] == ["w", "e"]
    assert [ln["level"] for ln in lines_of(out)] == ["warning", "error"]


def test_filtered_calls_are_noops_that_do_not_render() -> None:
    out = io.StringIO()
    configure_logging("info", stream=out)

    class Explodes:
        def __repr__(self) -> str:
            raise AssertionError("rendered although filtered")

    get_logger("x").debug("d", obj=Explodes())
    assert out.getvalue() == ""


def test_level_names_case_insensitive_and_unknown_rejected() -> None:
    out = io.StringIO()
    configure_logging("ERROR", stream=out)
    get_logger("x").warning("w")
    assert out.getvalue() == ""
    with pytest.raises(ValueError, match="unknown log level 'loud'"):
        configure_logging("loud", stream=out)


def test_exception_is_formatted_into_one_json_line() -> None:
    out = io.StringIO()
    configure_logging("info", stream=out)
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        get_logger("x").exception("failed")
    (line,) = lines_of(out)
    assert line["level"] == "error"
    assert "Traceback" in line["exception"]
    assert "RuntimeError: boom" in line["exception"]


def test_unserialisable_values_do_not_break_logging() -> None:
    out = io.StringIO()
    configure_logging("info", stream=out)
    get_logger("x").info("odd", value=object(), nums={1: "a"})
    (line,) = lines_of(out)
    assert line["value"].startswith("<object object")
    assert line["nums"] == {"1": "a"}


def test_stdlib_logging_goes_through_the_same_renderer() -> None:
    out = io.StringIO()
    configure_logging("info", stream=out)
    structlog.contextvars.bind_contextvars(request_id="rid-1")
    logging.getLogger("asyncio").warning("loop %s", "stalled")
    logging.getLogger("asyncio").debug("hidden")
    (line,) = lines_of(out)
    assert line["event"] == "loop stalled"
    assert line["logger"] == "asyncio"
    assert line["level"] == "warning"
    assert line["request_id"] == "rid-1"


def test_configure_is_idempotent() -> None:
    first, second = io.StringIO(), io.StringIO()
    configure_logging("info", stream=first)
    configure_logging("info", stream=second)
    ours = [h for h in logging.getLogger().handlers if isinstance(h, logging.StreamHandler)]
    assert [h.stream for h in ours if h.stream in (first, second)] == [second]
    logging.getLogger("lib").warning("once")
    get_logger("x").info("once")
    assert first.getvalue() == ""
    assert len(lines_of(second)) == 2


def test_console_renderer_for_people() -> None:
    out = io.StringIO()
    configure_logging("info", json=False, stream=out)
    get_logger("x").info("hello", replica="r1")
    text = out.getvalue()
    assert "hello" in text
    assert "replica=r1" in text
    assert not text.startswith("{")
    assert "\x1b[" not in text  # no colours when not writing to a terminal


def test_request_ids_are_unique_and_short() -> None:
    ids = [new_request_id() for _ in range(10_000)]
    assert len(set(ids)) == len(ids)
    assert all(len(i) < 32 for i in ids)
    prefix = ids[0].rsplit("-", 1)[0]
    assert all(i.startswith(prefix + "-") for i in ids)
    assert int(ids[1].rsplit("-", 1)[1], 16) == int(ids[0].rsplit("-", 1)[1], 16) + 1


def test_request_ids_unique_across_threads() -> None:
    results: list[list[str]] = [[] for _ in range(4)]

    def work(bucket: list[str]) -> None:
        bucket.extend(new_request_id() for _ in range(2000))

    threads = [threading.Thread(target=work, args=(b,)) for b in results]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    all_ids = [i for b in results for i in b]
    assert len(set(all_ids)) == len(all_ids)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_forked_child_gets_a_new_prefix() -> None:
    parent_prefix = new_request_id().rsplit("-", 1)[0]
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - runs in the child
        os.close(read_fd)
        os.write(write_fd, new_request_id().encode())
        os._exit(0)
    os.close(write_fd)
    child_id = os.read(read_fd, 100).decode()
    os.close(read_fd)
    os.waitpid(pid, 0)
    assert child_id.rsplit("-", 1)[0] != parent_prefix
