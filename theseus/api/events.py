"""Wire types of the cluster's event stream (``GET /v1/events``) and of its HTTP callbacks
(``/v1/event-subscriptions``), shared by the server (``theseus.server.events``), the clients
(``theseus.api.events_client``) and the CLI (``theseus events``, ``theseus event-subscription``).

An event's ``index`` is the etcd revision of the change it comes from and its ``id`` is
``<index>-<n>`` (the n-th event of that revision): every server derives the same events with the
same ids from the same etcd history, so a client resumes on any server and a callback receiver
deduplicates on the id.
"""

from __future__ import annotations

from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator

Topic = Literal["task", "group", "deployment", "node", "registry", "scheduling", "audit"]
TOPICS: tuple[Topic, ...] = (
    "task",
    "group",
    "deployment",
    "node",
    "registry",
    "scheduling",
    "audit",
)
# Not a topic one subscribes to: what the stream itself says (a reset, a heartbeat).
STREAM = "stream"


class Event(BaseModel):
    model_config = ConfigDict(frozen=True)

    id: str  # "<index>-<n>": the same on every server
    index: int  # the etcd revision the event comes from
    time: float  # unix time: the record's own time where it has one
    topic: str  # one of TOPICS, or "stream" (reset, heartbeat)
    type: str  # TaskStarted, TaskExited, PlacementFailed, NodeLost, ...
    key: str = ""  # what it is about: a task id, a group, a deployment id, a node, a service
    service: str | None = None
    message: str = ""
    payload: dict[str, Any] = {}


def event_position(event_id: str) -> tuple[int, int] | None:
    """(index, n) of an event id; None if it is not one (a reset's or a heartbeat's)."""
    index, _, n = event_id.partition("-")
    if index.isdigit() and n.isdigit():
        return int(index), int(n)
    return None


def url_problem(url: str) -> str | None:
    """Why ``url`` cannot be a callback's address, or None."""
    try:
        parts = urlsplit(url)
    except ValueError as exc:
        return f"not a URL: {exc}"
    if parts.scheme not in ("http", "https"):
        return "must be an http:// or https:// URL"
    if not parts.hostname:
        return "must name a host"
    try:
        _ = parts.port
    except ValueError:
        return "has a bad port"
    if len(url) > 2048:
        return "is longer than 2048 characters"
    return None


class SubscriptionCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    url: str
    topics: list[Topic] = Field(default_factory=list)  # none: every topic
    services: list[str] = Field(default_factory=list)  # none: every service

    @field_validator("url")
    @classmethod
    def _an_http_url(cls, url: str) -> str:
        problem = url_problem(url)
        if problem is not None:
            raise ValueError(problem)
        return url


class Subscription(BaseModel):
    """A callback: the leader POSTs the events it selects to ``url``, in order."""

    model_config = ConfigDict(frozen=True)

    id: str
    url: str
    topics: list[str] = []
    services: list[str] = []
    created_at: float
    created_by: str = ""


class SubscriptionInfo(Subscription):
    delivered: str | None = None  # the id of the last event the receiver acknowledged


class SubscriptionList(BaseModel):
    subscriptions: list[SubscriptionInfo]


class Delivery(BaseModel):
    """The body of one callback POST: events in order; each id at most once per delivery."""

    subscription: str
    events: list[Event]


EventFormat = Literal["ndjson", "sse"]
