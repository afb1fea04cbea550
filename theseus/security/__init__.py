"""Theseus's security primitives: the cluster CA and certificates (``pki``), where they are
kept (``files``), tokens and scopes (``tokens``), TLS contexts (``tls``). Pure or local-file
only; the server, the agent, the store, the launcher and the CLI build on them. Threat model
and setup: docs/security.md."""
