"""vllm-router and LiteLLM's proxy as benchmark targets, started from their cached venvs.

Both run as a new user would run them: their defaults, pointed at the same upstreams as nginx
and hanode, with one exception: vllm-router gets ``--policy round_robin``. Its default,
``cache_aware``, keeps a prefix tree of every prompt and cost about 4x the CPU per request on
this machine (0.62 against 0.17 ms at c=64); round-robin is its cheapest policy and the one
that compares with nginx's and hanode's balancing, so the ratios are against the strongest
vllm-router; the proxy-limited run measures the default too. vllm-router (Rust, one process,
a thread per core) with ``--worker-urls``;
LiteLLM's proxy (Python, one uvicorn worker by default) with a ``model_list`` of three
``openai/`` deployments under one model name and the ``master_key`` it needs, sent by every
client as ``Authorization: Bearer``. Neither is told anything about the benchmark beyond that.
"""

from __future__ import annotations

import json
import secrets
from pathlib import Path

from bench.harness import HOST, BenchError, ProcGroup, free_port
from bench.venvs import Installed
from hanode.devtools.procs import ChildProcess, raw_request, wait_until

# LiteLLM fetches a model price map from GitHub at start (retried for ~10 s offline) and
# phones home; neither is part of relaying a request.
LITELLM_ENV = {
    "LITELLM_LOCAL_MODEL_COST_MAP": "True",
    "LITELLM_LOG": "ERROR",
    "LITELLM_TELEMETRY": "False",
    "PYTHONPATH": "",  # not hanode's source tree: their venv only
}


def completion_probe(
    port: int, model: str, headers: dict[str, str] | None = None, timeout: float = 5.0
) -> bool:
    """True when a tiny completion through ``port`` answers 200 with choices."""
    body = json.dumps({"model": model, "prompt": "ready?", "max_tokens": 2}).encode()
    hdrs = {"content-type": "application/json", **(headers or {})}
    status, _, answer = raw_request(
        "POST", f"http://{HOST}:{port}/v1/completions", body, hdrs, timeout
    )
    return status == 200 and b'"choices"' in answer


def wait_serving(
    proc: ChildProcess,
    port: int,
    model: str,
    what: str,
    headers: dict[str, str] | None = None,
    timeout_s: float = 60.0,
) -> None:
    """Until a completion through ``port`` succeeds; the process's output on failure."""

    def ready() -> bool:
        if not proc.alive:
            raise BenchError(f"{what} exited:\n{proc.output()[-2000:]}")
        return completion_probe(port, model, headers, timeout=2.0)

    try:
        wait_until(ready, timeout_s, 0.2, f"{what} serving on port {port}")
    except TimeoutError as exc:
        raise BenchError(f"{exc}\n--- {what} output ---\n{proc.output()[-2000:]}") from None


def start_vllm_router(
    group: ProcGroup,
    tool: Installed,
    name: str,
    upstream_urls: list[str],
    model: str,
    policy: str | None = "round_robin",
) -> tuple[ChildProcess, int]:
    """vllm-router over ``upstream_urls`` with ``policy`` (None: its default, cache_aware);
    (process, port)."""
    port = free_port()
    argv = [
        tool.executable,
        "--host",
        HOST,
        "--port",
        str(port),
        "--prometheus-port",
        str(free_port()),  # its default (29000) could be taken
        *(("--policy", policy) if policy else ()),
        "--worker-urls",
        *upstream_urls,
    ]
    proc = group.add(name, lambda log: ChildProcess(argv, env={"PYTHONPATH": ""}, log_path=log))
    wait_serving(proc, port, model, name)
    return proc, port


def litellm_config(upstream_urls: list[str], model: str, master_key: str) -> str:
    """The proxy's config (JSON, which YAML reads): one deployment per upstream, one name."""
    doc = {
        "model_list": [
            {
                "model_name": model,
                "litellm_params": {
                    "model": f"openai/{model}",
                    "api_base": f"{url}/v1",
                    "api_key": "none",
                },
            }
            for url in upstream_urls
        ],
        "general_settings": {"master_key": master_key},
        "litellm_settings": {"turn_off_message_logging": True},
    }
    return json.dumps(doc, indent=2)


def start_litellm(
    group: ProcGroup,
    tool: Installed,
    name: str,
    tmp: Path,
    upstream_urls: list[str],
    model: str,
) -> tuple[ChildProcess, int, dict[str, str]]:
    """LiteLLM's proxy over ``upstream_urls``; (process, port, the headers clients send)."""
    port = free_port()
    key = "sk-bench-" + secrets.token_hex(12)
    workdir = tmp / name
    workdir.mkdir(parents=True, exist_ok=True)
    config = workdir / "config.yaml"
    config.write_text(litellm_config(upstream_urls, model, key))
    argv = [tool.executable, "--config", str(config), "--host", HOST, "--port", str(port)]
    proc = group.add(name, lambda log: ChildProcess(argv, env=LITELLM_ENV, log_path=log))
    headers = {"authorization": f"Bearer {key}"}
    wait_serving(proc, port, model, name, headers, timeout_s=120.0)
    return proc, port, headers
