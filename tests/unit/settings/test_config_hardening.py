"""Issue 16, finding 13: configurations that were accepted and then misbehaved or failed
without naming the key: [api] without [cluster] (silently ignored),
listens that collide (a bare [Errno 98] at start), --insecure-dev on a reachable Raft port."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path
from typing import Any

import pytest

from hanode.cli.main import main as hanode_main
from hanode.config import parse_config
from hanode.daemon import Node, StartupError, listen_conflicts
from hanode.devtools.procs import free_port
from tests.unit.settings.config_cases import SRC, minimal, one_error


def cluster(tmp_path: Path, **values: Any) -> dict[str, Any]:
    data = minimal()
    data["node"].update(advertise_host="127.0.0.1", data_dir=str(tmp_path / "data"))
    data["router"]["listen"] = f"127.0.0.1:{free_port()}"
    data["metrics"]["listen"] = f"127.0.0.1:{free_port()}"
    secret = tmp_path / "secret"
    secret.write_text("s" * 20)
    secret.chmod(0o600)  # secret files open to others are refused at start
    data["cluster"] = {
        "raft_listen": f"127.0.0.1:{free_port()}",
        "peers": ["127.0.0.1:1"],
        "secret_file": str(secret),
        **values,
    }
    return data


def test_api_without_cluster_is_refused_naming_the_file_and_key() -> None:
    data = minimal()
    data["api"] = {"listen": "127.0.0.1:9200"}
    err = one_error(data)
    assert err.startswith(f"{SRC}: [api]: ") and "[cluster]" in err, err


def test_colliding_listens_fail_check_config_naming_both_keys(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = cluster(tmp_path)
    data["api"] = {"listen": data["metrics"]["listen"]}
    conflicts = listen_conflicts(parse_config(data, SRC))
    assert len(conflicts) == 1 and "[metrics].listen" in conflicts[0], conflicts
    assert "[api].listen" in conflicts[0]
    path = tmp_path / "node.toml"
    path.write_text(
        "\n".join(
            [
                "[node]\nname = 'n1'\ndata_dir = '/tmp/x'",
                "[router]\nlisten = '0.0.0.0:8080'",
                "[metrics]\nlisten = '127.0.0.1:8080'",
                "[[replicas]]\nname = 'r1'\nmodel = 'm'\nurl = 'http://127.0.0.1:8001'",
            ]
        )
    )
    assert hanode_main(["check-config", str(path)]) == 2
    err = capsys.readouterr().err
    assert "[router].listen" in err and "[metrics].listen" in err, err


def _start(config_data: dict[str, Any], insecure_dev: bool = False) -> str:
    async def go() -> str:
        node = Node(parse_config(config_data, SRC), insecure_dev)
        try:
            with pytest.raises(StartupError) as err:
                await node.start()
        finally:
            await node.close()
        return str(err.value)

    return asyncio.run(go())


def test_a_router_port_in_use_names_the_key_and_address(tmp_path: Path) -> None:
    data = minimal()
    data["node"]["data_dir"] = str(tmp_path)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        data["router"]["listen"] = f"127.0.0.1:{port}"
        data["metrics"]["listen"] = f"127.0.0.1:{free_port()}"
        message = _start(data)
    assert message.startswith(f"{SRC}: [router].listen: ") and f"127.0.0.1:{port}" in message
    assert "\n" not in message


def test_a_raft_port_in_use_names_the_key_and_address(tmp_path: Path) -> None:
    data = cluster(tmp_path)
    with socket.socket() as taken:
        host, port = data["cluster"]["raft_listen"].split(":")
        taken.bind((host, int(port)))
        taken.listen()
        message = _start(data)
    assert message.startswith(f"{SRC}: [cluster].raft_listen: "), message
    assert data["cluster"]["raft_listen"] in message


def test_insecure_dev_is_refused_on_a_raft_port_other_hosts_can_reach(tmp_path: Path) -> None:
    data = cluster(tmp_path, raft_listen="0.0.0.0:7001")
    del data["cluster"]["secret_file"]
    message = _start(data, insecure_dev=True)
    assert message.startswith(f"{SRC}: [cluster].raft_listen: ") and "loopback" in message
