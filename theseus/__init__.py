"""Theseus: a small container orchestrator.

The product's public surface is the HTTP API (``theseus.server``) and the ``theseus`` command
(``theseus.cli``); this package only carries the version.
"""

__version__ = "0.1.0"
