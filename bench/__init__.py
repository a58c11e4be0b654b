"""Benchmarks for the performance targets in DESIGN.md; run ``python -m bench ingress``.

Benchmarks print figures and ratios against ceilings measured in the same run; they are
not tests and never fail on timings (only when a run did not measure what it claims).
"""
