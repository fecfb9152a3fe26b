"""The Ansible role's config template renders to a configuration hanode accepts."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jinja2
import pytest
import yaml

from hanode.config import load_config

ROLE = Path(__file__).resolve().parents[2] / "ansible" / "roles" / "hanode"


def render(tmp_path: Path, **overrides: Any) -> Path:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(ROLE / "templates"),
        trim_blocks=True,  # as Ansible's template module does
        undefined=jinja2.StrictUndefined,
    )
    env.filters["to_json"] = json.dumps
    defaults = yaml.safe_load((ROLE / "defaults" / "main.yml").read_text())
    values: dict[str, Any] = {
        **{k: v for k, v in defaults.items() if "{{" not in str(v)},
        "ansible_managed": "managed by Ansible",
        "hanode_node_name": "gpu-node-1",
        "hanode_data_dir": str(tmp_path / "data"),
        "hanode_config_dir": str(tmp_path),
        "hanode_raft_bind": "10.0.0.11",
        # Defaults that are templates (the host's own address, generated keys) given here.
        "hanode_router_listen": "10.0.0.11:8080",
        "hanode_api_listen": "10.0.0.11:9200",
        "hanode_api_keys": [],
        "hanode_advertise_host": "10.0.0.11",
        "hanode_raft_peers": ["10.0.0.12:7100", "10.0.0.13:7100"],
        "hanode_replicas": [
            {"name": "llama-0", "model": "llama", "url": "http://127.0.0.1:8001", "gpu": 0},
            {
                "name": "llama-1",
                "model": "llama",
                "url": "http://127.0.0.1:8002",
                "engine": "sglang",
                "role": "standby",
                "gpu": 1,
            },
        ],
        "hanode_models": [{"name": "llama", "min_active": 1, "redundancy": "n_plus_1"}],
        "hanode_retry": {"max_attempts": 2},
        **overrides,
    }
    out = tmp_path / "hanode.toml"
    out.write_text(env.get_template("hanode.toml.j2").render(**values))
    return out


def test_cluster_config_renders_and_loads(tmp_path: Path) -> None:
    (tmp_path / "raft.secret").write_text("x" * 20)
    (tmp_path / "api_tokens").write_text("token-1-0123456789\n")
    cfg = load_config(render(tmp_path, hanode_api_tokens=["token-1-0123456789"]))
    assert cfg.node.name == "gpu-node-1"
    assert cfg.node.advertise_host == "10.0.0.11"
    assert cfg.cluster is not None
    assert str(cfg.cluster.raft_listen) == "10.0.0.11:7100"
    assert [str(p) for p in cfg.cluster.peers] == ["10.0.0.12:7100", "10.0.0.13:7100"]
    assert cfg.api is not None and cfg.api.api_keys == ("token-1-0123456789",)
    assert [r.name for r in cfg.replicas] == ["llama-0", "llama-1"]
    assert cfg.replicas[1].engine == "sglang"
    assert [(m.name, m.redundancy) for m in cfg.models] == [("llama", "n_plus_1")]
    assert cfg.retry.max_attempts == 2


@pytest.mark.parametrize("cluster", [False])
def test_standalone_config_renders_and_loads(tmp_path: Path, cluster: bool) -> None:
    cfg = load_config(render(tmp_path, hanode_cluster=cluster, hanode_models=[]))
    assert cfg.cluster is None and cfg.api is None


def test_defaults_are_closed() -> None:
    """Issue 14: keys and tokens generated unless given, listeners on the host's own address,
    the ops endpoint on loopback."""
    defaults = yaml.safe_load((ROLE / "defaults" / "main.yml").read_text())
    for key in ("hanode_api_keys", "hanode_api_tokens"):
        assert len(defaults[key]) == 1 and "lookup('ansible.builtin.password'" in defaults[key][0]
    assert "lookup('ansible.builtin.password'" in defaults["hanode_raft_secret"]
    assert defaults["hanode_open_front_door"] is False
    assert defaults["hanode_router_listen"].startswith("{{ hanode_advertise_host }}:")
    assert defaults["hanode_api_listen"].startswith("{{ hanode_advertise_host }}:")
    assert defaults["hanode_metrics_listen"].startswith("127.0.0.1:")
    assert "0.0.0.0" not in (ROLE / "defaults" / "main.yml").read_text()
