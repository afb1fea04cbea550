"""Chaos testing: random faults on a real cluster, then invariants (``python -m tests.chaos``)."""
