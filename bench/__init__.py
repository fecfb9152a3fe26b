"""Benchmarks of hanode vs a direct connection and nginx: ``make bench`` (``python -m bench.run``).

Modules: ``procs`` (start/stop processes by pid, CPU time), ``tools`` (nginx and wrk, installed
with apt when missing), ``nginx`` (a private nginx instance), ``load`` (wrk, first-chunk client,
failover client), ``profile`` (py-spy), ``report`` (machine facts, table, docs/benchmarks.md).
"""
