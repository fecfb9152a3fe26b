"""End-to-end, with the daemon in this process (its supervisor is the hook `hanodectl restart`
calls): a start command that exits at once is restarted with growing delays, then stopped as a
crash loop with an event; clearing it (``Supervisor.restart``) starts it again, and once the
cause is gone the replica serves."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from prometheus_client import generate_latest

from hanode.config import load_config
from hanode.daemon import Node
from hanode.pool.lifecycle import Observed
from tests.e2e.conftest import metric_sum
from tests.e2e.recovery_support import kill_replicas, sim_command, supervised, write_config
from tests.support.procs import free_port

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(90)]


async def until(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    """Poll ``predicate`` on the loop (every 50 ms) for at most ``timeout`` seconds."""
    for _ in range(int(timeout / 0.05)):
        if predicate():
            return
        await asyncio.sleep(0.05)
    raise TimeoutError(what)


def test_an_exiting_start_command_backs_off_then_is_a_crash_loop_until_restarted(
    tmp_path: Path,
) -> None:
    data_dir = tmp_path / "data"
    port = free_port()
    broken = tmp_path / "broken"  # while it exists, the replica's command exits at once
    broken.write_text("model files missing\n")
    script = (
        "import os, sys\n"
        f"if os.path.exists({str(broken)!r}):\n"
        "    sys.exit(3)\n"
        f"os.execv(sys.executable, {sim_command(port)!r})\n"
    )
    config = load_config(
        write_config(
            tmp_path / "node.toml",
            data_dir,
            [supervised("r0", port, [sys.executable, "-c", script])],
        )
    )

    async def main() -> None:
        node = Node(config)
        await node.start()
        try:
            sup = node.supervisor
            assert sup is not None

            def observed() -> Observed:
                return sup.observed()["r0"].observed

            def of(kind: str) -> list[dict[str, object]]:
                return [e.as_dict() for e in node.events.recent(500) if e.kind == kind]

            await until(lambda: observed() is Observed.CRASH_LOOP, 30, "a crash loop")
            delays = [e["fields"]["delay_s"] for e in of("backoff")]  # type: ignore[index]
            assert delays == [0.2, 0.4, 0.8]  # doubling: [recovery] base 0.2, no jitter
            assert all("code 3" in str(e["message"]) for e in of("backoff"))
            assert len(of("restart")) == 3
            (loop_event,) = of("crash_loop")
            assert "hanodectl restart r0" in str(loop_event["message"])
            report = sup.observed()["r0"]
            assert report.restarts == 3 and report.pid is None
            page = generate_latest(node.metrics.registry).decode()
            assert metric_sum(page, "hanode_replica_restarts_total", replica="r0") == 3.0
            assert metric_sum(page, "hanode_replica_crash_loops_total", replica="r0") == 1.0
            # It stays stopped: more rounds start nothing.
            starts = len(of("restart")) + len(of("process"))
            for _ in range(3):
                assert (await sup.reconcile("r0")).observed is Observed.CRASH_LOOP
            assert len(of("restart")) + len(of("process")) == starts
            marker = data_dir / "replicas" / "r0.crash_loop"  # a daemon restart keeps it
            assert "code 3" in marker.read_text()
            # The operator fixes the cause and clears the loop.
            broken.unlink()
            await sup.restart("r0")
            assert not marker.exists()
            assert observed() is not Observed.CRASH_LOOP
            assert of("restart")[-1]["fields"] == {"reason": "operator"}
            await until(lambda: observed() is Observed.RUNNING, 30, "r0 running")
            await until(
                lambda: node.pool_view.snapshot.replicas["r0"].observation.level.serving,
                10,
                "r0 serving",
            )
        finally:
            await node.close()
            kill_replicas(data_dir, ["r0"])

    asyncio.run(asyncio.wait_for(main(), 80))
