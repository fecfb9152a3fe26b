"""Benchmarks of hanode: ``make bench`` (``python -m bench.run``), report in docs/benchmarks.md.

By what they measure, single node (three simulators; direct, nginx and hanode in front):
``overhead`` (latency c=1, throughput and CPU per request c=64, response framing),
``streaming`` (first-chunk delay), ``profile`` (py-spy: where hanode's time goes),
``replica_failover`` (a simulator killed under load). Against the LLM routers (``routers``:
vllm-router and LiteLLM from cached venvs, ``venvs``, started by ``llm_routers``; hanode
workers 1/2/auto): ``stream_relay`` (64 streams of 200 chunks, counted by ``sse``),
``proxy_limited`` (a canned upstream: each proxy's ceiling), ``failover_targets`` (a kill under
load through each target), reported by ``routers_report``. Cluster (three nodes, Raft), in
``cluster/``: ``writes`` (consensus write rate), ``breakers`` (breaker propagation), ``leader``
(leader failover). Shared: ``harness`` (processes from hanode.devtools.procs, CPU, logs),
``client`` (the one keep-alive HTTP client), ``targets`` and ``cluster/harness`` (the two
setups), ``wrk``, ``nginx``, ``tools`` (apt installs), ``machine``, ``report``, ``run``.
"""
