"""``theseus events`` (the cluster's event stream) and ``theseus event-subscription
add|list|remove`` (its HTTP callbacks).

Registered by ``theseus.cli.main``; reads through ``theseus.api.events_client``, which follows
the stream across servers. ``--since 10m`` starts ten minutes back (what the servers kept:
everything in their window, notable events and audits from before it); without it, ``-f``
follows from now on, and a plain ``theseus events`` shows the last ten minutes.
"""

from __future__ import annotations

import datetime
import time
from typing import Annotated

import typer
from pydantic import ValidationError
from rich.markup import escape

from theseus.api.client import ServerUnreachable
from theseus.api.events import TOPICS, Event, SubscriptionCreate
from theseus.api.events_client import events, subscribe, subscriptions, unsubscribe
from theseus.cli.access_cmds import JsonOption, parse_duration, when
from theseus.cli.output import connect, console, fail, print_json, print_table, table

_STYLES = {
    "TaskExited": "yellow",
    "TaskFailed": "red",
    "TaskLost": "red",
    "TaskUnhealthy": "red",
    "PlacementFailed": "yellow",
    "DeploymentFailed": "red",
    "NodeLost": "red",
    "reset": "bold red",
}


def format_event(event: Event) -> str:
    at = datetime.datetime.fromtimestamp(event.time).strftime("%H:%M:%S")
    style = _STYLES.get(event.type, "")
    kind = f"[{style}]{event.type}[/]" if style else event.type
    return f"[dim]{at} #{event.index}[/] {event.topic:<10} {kind:<20} {escape(event.message)}"


def _topics(topic: list[str]) -> list[str]:
    unknown = [t for t in topic if t not in TOPICS]
    if unknown:
        raise typer.BadParameter(
            f"unknown {', '.join(unknown)} (known: {', '.join(TOPICS)})", param_hint="--topic"
        )
    return topic


def events_command(
    ctx: typer.Context,
    follow: Annotated[bool, typer.Option("--follow", "-f", help="Keep following.")] = False,
    topic: Annotated[
        list[str], typer.Option("--topic", "-t", help=f"Only these ({', '.join(TOPICS)}).")
    ] = [],  # noqa: B006 (typer copies defaults)
    service: Annotated[list[str], typer.Option("--service", "-s", help="Only these.")] = [],  # noqa: B006
    since: Annotated[
        str | None, typer.Option("--since", help="Start this far back: 90s, 10m, 1h.")
    ] = None,
    json_out: JsonOption = False,
) -> None:
    """The cluster's events: tasks, groups, deployments, nodes, registry, scheduling, audit."""
    start = time.time() - parse_duration(since) if since else None
    if start is None and not follow:
        start = time.time() - 600  # a plain `theseus events`: the last ten minutes
    with connect(ctx) as client:
        try:
            for event in events(
                client, topics=_topics(topic), services=service, since=start, follow=follow
            ):
                if json_out:
                    print(event.model_dump_json(), flush=True)
                else:
                    console.print(format_event(event), highlight=False)
        except ServerUnreachable as exc:
            fail(str(exc))
        except KeyboardInterrupt:
            return


subscription_app = typer.Typer(
    help="HTTP callbacks of the event stream (admin).", no_args_is_help=True
)


@subscription_app.command("add")
def add(
    ctx: typer.Context,
    url: Annotated[str, typer.Argument(help="Where to POST the events (http:// or https://).")],
    topic: Annotated[list[str], typer.Option("--topic", "-t", help="Only these.")] = [],  # noqa: B006
    service: Annotated[list[str], typer.Option("--service", "-s", help="Only these.")] = [],  # noqa: B006
    json_out: JsonOption = False,
) -> None:
    """Send the events from now on to URL, in order, each at least once."""
    try:
        body = SubscriptionCreate.model_validate(
            {"url": url, "topics": _topics(topic), "services": service}
        )
    except ValidationError as exc:
        fail(f"url: {exc.errors()[0]['msg']}")
    with connect(ctx) as client:
        created = subscribe(client, body)
    if json_out:
        print_json(created)
        return
    console.print(f"subscription {created.id}: events go to {escape(created.url)}")


@subscription_app.command("list")
def list_(ctx: typer.Context, json_out: JsonOption = False) -> None:
    """The subscriptions, and the last event each receiver acknowledged."""
    with connect(ctx) as client:
        found = subscriptions(client).subscriptions
    if json_out:
        print_json(found)
        return
    view = table("ID", "URL", "TOPICS", "SERVICES", "DELIVERED", "CREATED", "BY")
    for s in found:
        view.add_row(
            s.id,
            escape(s.url),
            ",".join(s.topics) or "all",
            ",".join(s.services) or "all",
            s.delivered or "-",
            when(s.created_at),
            s.created_by,
        )
    print_table(view)


@subscription_app.command("remove")
def remove(ctx: typer.Context, subscription_id: str) -> None:
    """Stop sending events to a subscription's URL."""
    with connect(ctx) as client:
        unsubscribe(client, subscription_id)
    console.print(f"removed subscription {subscription_id}")


def register(app: typer.Typer) -> None:
    app.command("events")(events_command)
    app.add_typer(subscription_app, name="event-subscription")
