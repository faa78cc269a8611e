"""Benchmarks: jobdispatch against its peers, in one process, interleaved.

Run ``python -m benchmarks`` from the repository root (``--quick`` for a run
of under a minute, ``--smoke`` for a few seconds, ``--help`` for the rest).
See docs/benchmarks.md for the method and the latest results.
"""
