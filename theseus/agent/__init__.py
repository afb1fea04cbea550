"""The Theseus node agent: one per machine, runs the tasks the server assigns to its node.

``run_agent(AgentConfig)`` is the entry point (``theseus agent``, tests, benchmarks).
Layout: ``agent`` (loops and life cycle), ``runner`` (per-task workers), ``decide`` (the pure
next-step function), ``environment`` (containers' variables), ``reports`` (the outbox),
``http`` (health and logs endpoint) and ``drivers`` (docker, process, sim).
"""

from theseus.agent.agent import run_agent
from theseus.agent.config import AgentConfig

__all__ = ["AgentConfig", "run_agent"]
