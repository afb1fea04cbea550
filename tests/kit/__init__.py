"""The test kit: what tests share, so that no test module imports another.

- ``wait``: waiting for a condition with a deadline (sync and asyncio); tests never sleep for
  a fixed time to let something happen.
- ``builders``: records, specs, API answers and assignments with realistic defaults.
- ``fake_driver``, ``fake_server``, ``fake_agent``, ``runner``: in-memory stand-ins for a
  driver, the server's agent API and an agent's discovery endpoint, and helpers around
  ``theseus.agent.runner.TaskRunner``.
- ``cluster``: real processes (etcd, servers, agents) on loopback, started through the
  launcher (``theseus.cluster``), for the integration tests and the chaos runner.
- ``strategies``: hypothesis strategies of reachable cluster states, for the property tests.
- ``store_contract``: what every ``theseus.store`` implementation must do, run against the
  in-memory store (unit) and a real etcd (integration).
- ``workloads``, ``rollouts``, ``cli``: what the integration tests deploy on such a cluster and
  how they look at it, as users do (HTTP, the ``theseus`` command, Docker, etcdctl).

Test modules and conftest files import from here; nothing here imports a test module.
"""
