"""Pure placement decisions: which node runs a task, and why no node could. No I/O."""
