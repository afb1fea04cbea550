"""Per-task metrics on the agent (docs/observability.md, "Task metrics").

* ``cgroups``, ``procfs``: pure parsers of the kernel's files (cgroup v1 and v2, ``/proc``);
* ``samples``: what one reading is, the bounded ring of samples per task, the sample store;
* ``reader``: reads those files for one container or process tree (the only file I/O);
* ``collector``: the agent's loop that reads every running task every few seconds;
* ``prometheus``: the store as cAdvisor-named Prometheus metrics (the agent's ``/metrics``).
"""
