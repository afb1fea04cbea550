"""Client calls of the credential routes (``theseus.server.routes.access``), over a
``ServerClient``'s failover: for ``theseus token``, ``theseus join-token``, ``theseus acl``,
``theseus audit``, ``theseus nodes remove`` and ``theseus registry-login``/``-logout``/``-logins``,
and for the launcher's bootstrap."""

from __future__ import annotations

from theseus.api.access import (
    AuditList,
    CallerInfo,
    JoinTokenCreate,
    JoinTokenCreated,
    JoinTokenInfo,
    JoinTokenList,
    RegistryLoginInfo,
    RegistryLoginList,
    TokenCreate,
    TokenCreated,
    TokenInfo,
    TokenList,
)
from theseus.api.client import ServerClient
from theseus.security.tokens import Scope


class AccessApi:
    def __init__(self, client: ServerClient) -> None:
        self._client = client

    def bootstrap(self) -> TokenCreated:
        answer = self._client.request("POST", "/v1/acl/bootstrap", once=True)
        return TokenCreated.model_validate(answer.json())

    def whoami(self) -> CallerInfo:
        return CallerInfo.model_validate(self._client.request("GET", "/v1/acl/self").json())

    def tokens(self) -> TokenList:
        return TokenList.model_validate(self._client.request("GET", "/v1/acl/tokens").json())

    def create_token(self, name: str, scopes: list[Scope], ttl: float | None) -> TokenCreated:
        body = TokenCreate(name=name, scopes=scopes, ttl=ttl).model_dump(mode="json")
        answer = self._client.request("POST", "/v1/acl/tokens", once=True, json=body)
        return TokenCreated.model_validate(answer.json())

    def revoke_token(self, token_id: str) -> TokenInfo:
        answer = self._client.request("DELETE", f"/v1/acl/tokens/{token_id}")
        return TokenInfo.model_validate(answer.json())

    def join_tokens(self) -> JoinTokenList:
        answer = self._client.request("GET", "/v1/acl/join-tokens")
        return JoinTokenList.model_validate(answer.json())

    def create_join_token(self, ttl: float) -> JoinTokenCreated:
        body = JoinTokenCreate(ttl=ttl).model_dump(mode="json")
        answer = self._client.request("POST", "/v1/acl/join-tokens", once=True, json=body)
        return JoinTokenCreated.model_validate(answer.json())

    def revoke_join_token(self, token_id: str) -> JoinTokenInfo:
        answer = self._client.request("DELETE", f"/v1/acl/join-tokens/{token_id}")
        return JoinTokenInfo.model_validate(answer.json())

    def remove_node(self, name: str) -> None:
        self._client.request("DELETE", f"/v1/nodes/{name}")

    def audit(self, since: float = 0.0, limit: int = 1000) -> AuditList:
        params = {"since": str(since), "limit": str(limit)}
        return AuditList.model_validate(
            self._client.request("GET", "/v1/audit", params=params).json()
        )

    def registry_logins(self) -> RegistryLoginList:
        answer = self._client.request("GET", "/v1/acl/registry-logins")
        return RegistryLoginList.model_validate(answer.json())

    def registry_login(self, host: str, username: str, password: str) -> RegistryLoginInfo:
        # Not validated here: a pydantic error would quote the password; the server's 422
        # names the field only.
        body = {"username": username, "password": password}
        answer = self._client.request("PUT", f"/v1/acl/registry-logins/{host}", json=body)
        return RegistryLoginInfo.model_validate(answer.json())

    def registry_logout(self, host: str) -> RegistryLoginInfo:
        answer = self._client.request("DELETE", f"/v1/acl/registry-logins/{host}")
        return RegistryLoginInfo.model_validate(answer.json())
