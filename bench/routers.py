"""The LLM-router parts of ``make bench``: hanode against nginx, vllm-router and LiteLLM's proxy.

:func:`prepare` finds (or installs, into cached venvs: :mod:`bench.venvs`) vllm-router and
LiteLLM and names the hanode variants (``[router] workers`` 2 and "auto" besides 1); the
single-node setup (:mod:`bench.targets`) then runs them all side by side through the per-request
(:mod:`bench.overhead`) and streaming relay (:mod:`bench.stream_relay`) runs. :func:`run_after`
runs the two parts with their own processes: the proxy-limited run over a canned upstream
(:mod:`bench.proxy_limited`) and the failover run of each target (:mod:`bench.failover_targets`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from bench import failover_targets, proxy_limited, stream_relay, venvs
from bench.harness import say
from bench.targets import HANODE_VARIANTS, LITELLM, VLLM_ROUTER, Extras


@dataclass(frozen=True, slots=True)
class RoutersSettings:
    enabled: bool = True  # False (--no-routers): nginx and hanode only, as before
    relay: stream_relay.RelaySettings = field(default_factory=stream_relay.RelaySettings)
    limited: proxy_limited.LimitedSettings = field(default_factory=proxy_limited.LimitedSettings)
    failover: failover_targets.FailoverSettings = field(
        default_factory=failover_targets.FailoverSettings
    )


QUICK = RoutersSettings(
    relay=stream_relay.QUICK, limited=proxy_limited.QUICK, failover=failover_targets.QUICK
)


@dataclass(slots=True)
class RoutersResult:
    extras: Extras
    settings: RoutersSettings = field(default_factory=RoutersSettings)
    relay: dict[str, stream_relay.RelayResult] = field(default_factory=dict)
    limited: proxy_limited.LimitedResult | None = None
    failover: dict[str, failover_targets.TargetFailover] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)  # target -> why it is not in the run
    workers_seen: dict[str, int] = field(default_factory=dict)  # hanode variant -> children

    def versions(self) -> dict[str, str]:
        """``vllm-router`` / ``litellm`` -> the version measured, or why there is none."""
        out: dict[str, str] = {}
        for name, tool in ((VLLM_ROUTER, self.extras.vllm_router), (LITELLM, self.extras.litellm)):
            if isinstance(tool, venvs.Installed):
                out[name] = f"{tool.version} ({tool.venv})"
            elif tool is not None:
                out[name] = f"not run: {tool.reason}"
        return out


def prepare(settings: RoutersSettings, install: bool) -> Extras:
    """The LLM routers' venvs (installed when missing and ``install``) and hanode's variants."""
    if not settings.enabled:
        return Extras()
    tools = [venvs.ensure(spec, install) for spec in (venvs.VLLM_ROUTER, venvs.LITELLM)]
    for tool in tools:
        if isinstance(tool, venvs.Skip):
            say(f"{tool.spec.name}: skipped: {tool.reason}")
    return Extras(tools[0], tools[1], tuple(n for n in HANODE_VARIANTS if n != "hanode"))


def run_after(
    result: RoutersResult, tmp: Path, nginx: str, wrk_bin: str, settings: RoutersSettings
) -> None:
    """The proxy-limited run, then the failover of every target, each on its own processes."""
    say("proxy-limited: a canned nginx upstream, so the proxy is the bottleneck")
    result.limited = proxy_limited.run(
        tmp / "limited", nginx, wrk_bin, result.extras, settings.limited
    )
    names = ["nginx", "hanode", *result.extras.hanode_variants]
    for name, tool in ((VLLM_ROUTER, result.extras.vllm_router), (LITELLM, result.extras.litellm)):
        if isinstance(tool, venvs.Installed):
            names.append(name)
    names = [n for n in names if n not in result.skipped]  # did not start in the main setup
    say(f"failover per target: one of three simulators killed under load ({', '.join(names)})")
    result.failover = failover_targets.run(tmp, nginx, result.extras, settings.failover, names)
