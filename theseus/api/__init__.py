"""The HTTP contract between processes: wire schemas and typed clients.

The CLI and the agent talk to the server only through this package; they never import
``theseus.store``.
"""
