"""``AccessState``: the credentials the cluster knows, as the cache follows them from etcd.

The cache (``theseus.store.cache``) hands every key under ``/theseus/acl/`` to ``apply`` and
``remove``; the server's authentication (``theseus.server.auth``) reads the maps on every
request, so checking a token or a certificate costs a dict lookup, never an etcd round trip.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from theseus.security.records import (
    Bootstrap,
    JoinTokenRecord,
    NodeCertificate,
    RegistryLogin,
    RevokedCertificate,
    TokenRecord,
)
from theseus.store import keys


@dataclass
class AccessState:
    tokens: dict[str, TokenRecord] = field(default_factory=dict)  # by id
    join_tokens: dict[str, JoinTokenRecord] = field(default_factory=dict)  # by id
    certificates: dict[str, NodeCertificate] = field(default_factory=dict)  # by node
    revoked: dict[str, RevokedCertificate] = field(default_factory=dict)  # by serial (hex)
    bootstrap: Bootstrap | None = None
    registry_logins: dict[str, RegistryLogin] = field(default_factory=dict)  # by host

    def apply(self, key: str, value: bytes) -> None:
        """A put under ``keys.ACL`` (``ValueError`` from pydantic if the value is garbled)."""
        if key.startswith(keys.TOKENS):
            token = TokenRecord.model_validate_json(value)
            self.tokens[token.id] = token
        elif key.startswith(keys.JOIN_TOKENS):
            join = JoinTokenRecord.model_validate_json(value)
            self.join_tokens[join.id] = join
        elif key.startswith(keys.CERTIFICATES):
            cert = NodeCertificate.model_validate_json(value)
            self.certificates[cert.node] = cert
        elif key.startswith(keys.REVOKED):
            revoked = RevokedCertificate.model_validate_json(value)
            self.revoked[revoked.serial] = revoked
        elif key == keys.BOOTSTRAP:
            self.bootstrap = Bootstrap.model_validate_json(value)
        elif key.startswith(keys.REGISTRY_LOGINS):
            login = RegistryLogin.model_validate_json(value)
            self.registry_logins[login.host] = login

    def remove(self, key: str) -> None:
        if key.startswith(keys.TOKENS):
            self.tokens.pop(key.removeprefix(keys.TOKENS), None)
        elif key.startswith(keys.JOIN_TOKENS):
            self.join_tokens.pop(key.removeprefix(keys.JOIN_TOKENS), None)
        elif key.startswith(keys.CERTIFICATES):
            self.certificates.pop(key.removeprefix(keys.CERTIFICATES), None)
        elif key.startswith(keys.REVOKED):
            self.revoked.pop(key.removeprefix(keys.REVOKED), None)
        elif key == keys.BOOTSTRAP:
            self.bootstrap = None
        elif key.startswith(keys.REGISTRY_LOGINS):
            self.registry_logins.pop(key.removeprefix(keys.REGISTRY_LOGINS), None)
