"""Pure reconciliation: (cluster state, now) → the plan that moves it toward the specs.

See ``reconcile.py`` for the vocabulary. Nothing here does I/O; the leader commits plans.
"""
