"""The control-plane process: HTTP API for CLI and agents, and (when elected) the leader."""
