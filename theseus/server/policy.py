"""Who may call which route: one table, pure, read by ``theseus.server.auth`` on every request.

Every route of the API has its entry (a unit test compares the table with the app's OpenAPI
paths, so a new route without one fails the suite); a path matching no entry needs ``admin``,
so forgetting one errs on the closed side.

* ``public``: anyone (health, the CA certificate a joining agent pins, joining itself, which
  checks its join token, the one-time bootstrap, the API's description).
* ``read`` / ``write`` / ``admin``: an API token with that scope (``theseus.security.tokens``;
  each includes the ones before it). ``write`` is what changes workloads: deploy, scale,
  remove, rollback, cancel, drain, registry repair; ``admin`` is credentials and membership:
  tokens, join tokens, node removal, the audit log.
* ``node``: the agent of the node named in the path, by its certificate (an agent acts for
  itself only: Kubernetes' NodeRestriction).
* ``agents=True``: agents may also call it with their certificate (the registry reads they
  relay for their containers).
"""

from __future__ import annotations

import enum
import re
from typing import NamedTuple

from theseus.security.tokens import Scope


class Need(enum.StrEnum):
    PUBLIC = "public"
    READ = "read"
    WRITE = "write"
    ADMIN = "admin"
    NODE = "node"

    @property
    def scope(self) -> Scope | None:
        return {Need.READ: Scope.READ, Need.WRITE: Scope.WRITE, Need.ADMIN: Scope.ADMIN}.get(self)


class Rule(NamedTuple):
    need: Need
    agents: bool = False  # agents' certificates are accepted too


class Decision(NamedTuple):
    rule: Rule
    node: str | None  # the node named in the path of a ``node`` route


_TABLE: list[tuple[str, str, Rule]] = [
    ("GET", "/v1/health", Rule(Need.PUBLIC)),
    ("GET", "/v1/ca", Rule(Need.PUBLIC)),
    ("POST", "/v1/join", Rule(Need.PUBLIC)),
    ("POST", "/v1/acl/bootstrap", Rule(Need.PUBLIC)),
    ("GET", "/openapi.json", Rule(Need.PUBLIC)),
    ("GET", "/docs", Rule(Need.PUBLIC)),
    ("GET", "/docs/oauth2-redirect", Rule(Need.PUBLIC)),
    ("GET", "/redoc", Rule(Need.PUBLIC)),
    # Prometheus's scrape (theseus.server.metrics), with a read token like any other read.
    ("GET", "/metrics", Rule(Need.READ)),
    # The dashboard (theseus.server.ui): public to this table because it checks callers
    # itself, by its session cookie (or a token, or the development cluster's anonymous
    # admin), so that a browser without a token reaches its sign-in form. Its writes need
    # the write scope, this server as Origin and the session's CSRF token.
    ("GET", "/", Rule(Need.PUBLIC)),
    ("GET", "/ui/", Rule(Need.PUBLIC)),
    ("GET", "/ui/static/{name}", Rule(Need.PUBLIC)),
    ("GET", "/ui/login", Rule(Need.PUBLIC)),
    ("POST", "/ui/login", Rule(Need.PUBLIC)),
    ("POST", "/ui/logout", Rule(Need.PUBLIC)),
    ("GET", "/ui/group", Rule(Need.PUBLIC)),
    ("GET", "/ui/nodes", Rule(Need.PUBLIC)),
    ("GET", "/ui/tasks/{id}", Rule(Need.PUBLIC)),
    ("GET", "/ui/tasks/{id}/logs", Rule(Need.PUBLIC)),
    ("GET", "/ui/tasks/{id}/charts", Rule(Need.PUBLIC)),
    ("GET", "/ui/deployments", Rule(Need.PUBLIC)),
    ("GET", "/ui/events", Rule(Need.PUBLIC)),
    ("GET", "/ui/registry", Rule(Need.PUBLIC)),
    ("GET", "/ui/deploy", Rule(Need.PUBLIC)),
    ("GET", "/ui/stream", Rule(Need.PUBLIC)),
    ("POST", "/ui/deploy", Rule(Need.PUBLIC)),
    ("POST", "/ui/group/scale", Rule(Need.PUBLIC)),
    ("POST", "/ui/group/remove", Rule(Need.PUBLIC)),
    ("POST", "/ui/group/rollback", Rule(Need.PUBLIC)),
    ("POST", "/ui/group/restart", Rule(Need.PUBLIC)),
    ("POST", "/ui/deployments/{id}/cancel", Rule(Need.PUBLIC)),
    ("POST", "/ui/nodes/{name}/drain", Rule(Need.PUBLIC)),
    ("POST", "/ui/nodes/{name}/eligibility", Rule(Need.PUBLIC)),
    # Workloads: reads.
    ("GET", "/v1/groups", Rule(Need.READ)),
    ("GET", "/v1/groups/{service}/versions", Rule(Need.READ)),
    ("GET", "/v1/deployments", Rule(Need.READ)),
    ("GET", "/v1/deployments/{id}", Rule(Need.READ)),
    ("GET", "/v1/tasks", Rule(Need.READ)),
    ("GET", "/v1/tasks/{id}", Rule(Need.READ)),
    ("GET", "/v1/tasks/{id}/logs", Rule(Need.READ)),
    ("GET", "/v1/tasks/{id}/stats", Rule(Need.READ)),
    ("GET", "/v1/stats", Rule(Need.READ)),
    ("GET", "/v1/nodes", Rule(Need.READ)),
    ("GET", "/v1/nodes/{name}", Rule(Need.READ)),
    # Prometheus through the servers (theseus.server.routes.scrape): a read token suffices.
    ("GET", "/v1/nodes/{name}/metrics", Rule(Need.READ)),
    ("GET", "/v1/prometheus/targets", Rule(Need.READ)),
    ("GET", "/v1/registry/watch", Rule(Need.READ, agents=True)),
    ("GET", "/v1/events", Rule(Need.READ)),
    ("GET", "/v1/registry/{service}", Rule(Need.READ, agents=True)),
    # Workloads: writes.
    ("POST", "/deploy", Rule(Need.WRITE)),
    ("POST", "/v1/groups/{service}/scale", Rule(Need.WRITE)),
    ("DELETE", "/v1/groups/{service}", Rule(Need.WRITE)),
    ("POST", "/v1/groups/{service}/rollback", Rule(Need.WRITE)),
    ("POST", "/v1/groups/{service}/restart", Rule(Need.WRITE)),
    ("DELETE", "/v1/deployments/{id}", Rule(Need.WRITE)),
    ("POST", "/v1/nodes/{name}/drain", Rule(Need.WRITE)),
    ("POST", "/v1/nodes/{name}/eligibility", Rule(Need.WRITE)),
    ("GET", "/cleanup", Rule(Need.WRITE)),  # the original's: a GET that repairs the registry
    # Credentials and membership.
    ("DELETE", "/v1/nodes/{name}", Rule(Need.ADMIN)),
    ("GET", "/v1/acl/tokens", Rule(Need.ADMIN)),
    ("POST", "/v1/acl/tokens", Rule(Need.ADMIN)),
    ("DELETE", "/v1/acl/tokens/{id}", Rule(Need.ADMIN)),
    ("GET", "/v1/acl/join-tokens", Rule(Need.ADMIN)),
    ("POST", "/v1/acl/join-tokens", Rule(Need.ADMIN)),
    ("DELETE", "/v1/acl/join-tokens/{id}", Rule(Need.ADMIN)),
    ("GET", "/v1/acl/self", Rule(Need.READ)),
    # Image registries' logins: listed (never their passwords) with read, set with admin.
    ("GET", "/v1/acl/registry-logins", Rule(Need.READ)),
    ("PUT", "/v1/acl/registry-logins/{host}", Rule(Need.ADMIN)),
    ("DELETE", "/v1/acl/registry-logins/{host}", Rule(Need.ADMIN)),
    ("GET", "/v1/audit", Rule(Need.ADMIN)),
    # HTTP callbacks of the event stream: they send everything anywhere.
    ("GET", "/v1/event-subscriptions", Rule(Need.ADMIN)),
    ("POST", "/v1/event-subscriptions", Rule(Need.ADMIN)),
    ("DELETE", "/v1/event-subscriptions/{id}", Rule(Need.ADMIN)),
    # Agents, each for its own node (registration names its node in the body: the route
    # compares it with the certificate).
    ("POST", "/v1/agent/register", Rule(Need.NODE)),
    ("POST", "/v1/agent/{node}/heartbeat", Rule(Need.NODE)),
    ("GET", "/v1/agent/{node}/assignments", Rule(Need.NODE)),
    ("POST", "/v1/agent/{node}/reports", Rule(Need.NODE)),
    ("POST", "/v1/agent/{node}/certificate", Rule(Need.NODE)),
    # A registry's password, for the agent's pulls: no API token, whatever its scope, reads it.
    ("GET", "/v1/agent/{node}/registry-logins/{host}", Rule(Need.NODE)),
]

FALLBACK = Rule(Need.ADMIN)


def _compile(template: str) -> re.Pattern[str]:
    pattern = re.sub(r"\\\{(\w+)\\\}", r"(?P<\1>[^/]+)", re.escape(template))
    return re.compile(f"^{pattern}$")


class _Entry(NamedTuple):
    start: str  # the path's literal start, checked first: cheaper than the expression
    pattern: re.Pattern[str]
    rule: Rule
    template: str


# The table's entries by method, in order. Every request is looked up twice (here and by
# ``theseus.server.request_metrics``), and an agent's, near the end of the table, went through
# some 40 regular expressions each time: 11 µs a request for both lookups, now 5 µs.
def _by_method() -> dict[str, list[_Entry]]:
    entries: dict[str, list[_Entry]] = {}
    for method, path, rule in _TABLE:
        entry = _Entry(path.split("{")[0], _compile(path), rule, path)
        entries.setdefault(method, []).append(entry)
    return entries


_BY_METHOD = _by_method()
TEMPLATES = [(method, path) for method, path, _ in _TABLE]


def template_of(method: str, path: str) -> str | None:
    """The template of the table's entry ``path`` matches (``HEAD`` as ``GET``), or None: how
    ``theseus.server.request_metrics`` names a request refused before it was routed."""
    method = "GET" if method == "HEAD" else method
    for entry in _BY_METHOD.get(method, ()):
        if path.startswith(entry.start) and entry.pattern.match(path):
            return entry.template
    return None


def decide(method: str, path: str) -> Decision:
    """The rule for a request (``HEAD`` as ``GET``); ``FALLBACK`` for unknown paths."""
    method = "GET" if method == "HEAD" else method
    for entry in _BY_METHOD.get(method, ()):
        if path.startswith(entry.start):
            match = entry.pattern.match(path)
            if match:
                return Decision(entry.rule, match.groupdict().get("node"))
    return Decision(FALLBACK, None)
