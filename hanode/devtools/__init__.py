"""Local process orchestration for the demo, the benchmarks and the end-to-end tests.

Everything here runs on loopback only and stops only the processes it started, by pid.
"""
