"""The Theseus node agent: one per machine, runs the tasks the server assigns to its node.

``theseus.agent.agent.run_agent(AgentConfig)`` is the entry point (``theseus agent``, tests,
benchmarks), ``theseus.agent.config.AgentConfig`` its configuration. Layout: ``agent`` (loops
and life cycle), ``runner`` (per-task workers), ``decide`` (the pure next-step function),
``environment`` (containers' variables), ``reports`` (the outbox), ``http`` (health and logs
endpoint) and ``drivers`` (docker, process, sim).

Nothing is imported here: a module that needs one of the agent's constants or pure parts
(the CLI's options, the server) does not load the agent's loops, aiohttp and uvicorn with it.
"""
