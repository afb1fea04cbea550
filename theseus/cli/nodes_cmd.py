"""``theseus nodes``: the cluster's machines, and the operator's say over them.

* ``theseus nodes`` lists them (resources, use, liveness, eligibility);
* ``theseus nodes drain NODE`` moves its tasks elsewhere, each replacement started before the
  task it replaces stops, and keeps new work off it (``--wait`` until it is empty);
* ``theseus nodes ineligible NODE`` keeps new work off it but leaves its tasks running;
* ``theseus nodes eligible NODE`` ends either;
* ``theseus nodes remove NODE`` forgets it and revokes its certificate.

Registered by ``theseus.cli.main``; the semantics are Nomad's (``node drain``,
``node eligibility``), the work is the server's (``/v1/nodes/{name}/drain|eligibility``).
"""

from __future__ import annotations

from typing import Annotated

import typer

from theseus.api.access_client import AccessApi
from theseus.api.client import ServerClient
from theseus.api.schemas import NodeInfo
from theseus.cli.output import (
    NODE_COLUMNS,
    connect,
    console,
    fail,
    node_row,
    print_json,
    print_table,
    table,
)
from theseus.cluster.waiting import WaitTimeout, wait_until

JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")]
NodeArgument = Annotated[str, typer.Argument(help="The node's name (see `theseus nodes`).")]

nodes_app = typer.Typer(
    help="List the cluster's machines; drain them or make them (in)eligible for new tasks.",
    no_args_is_help=False,
)


@nodes_app.callback(invoke_without_command=True)
def nodes(ctx: typer.Context, json_out: JsonOption = False) -> None:
    """List the cluster's machines, their resources and how much is used."""
    if ctx.invoked_subcommand is not None:
        return
    with connect(ctx) as client:
        listing = client.nodes().nodes
    if json_out:
        print_json(listing)
        return
    if not listing:
        console.print("no nodes registered (start agents, or `theseus up`)")
        return
    view = table(*NODE_COLUMNS)
    for node in sorted(listing, key=lambda n: n.name):
        view.add_row(*node_row(node))
    print_table(view)


@nodes_app.command()
def drain(
    ctx: typer.Context,
    name: NodeArgument,
    wait: Annotated[
        bool, typer.Option("--wait", help="Wait until no task is left on the node.")
    ] = False,
    timeout: Annotated[float, typer.Option(help="Seconds --wait waits at most.")] = 300.0,
    disable: Annotated[
        bool, typer.Option("--disable", help="End a drain: the node is eligible again.")
    ] = False,
    json_out: JsonOption = False,
) -> None:
    """Move NODE's tasks to other nodes and keep new ones off it."""
    with connect(ctx) as client:
        node = client.drain_node(name, enable=not disable)
        if wait and not disable:
            node = _wait_empty(client, node, timeout, json_out)
    _say(node, json_out)


@nodes_app.command()
def ineligible(ctx: typer.Context, name: NodeArgument, json_out: JsonOption = False) -> None:
    """Keep new tasks off NODE; the tasks it runs stay."""
    with connect(ctx) as client:
        _say(client.set_eligibility(name, False), json_out)


@nodes_app.command()
def eligible(ctx: typer.Context, name: NodeArgument, json_out: JsonOption = False) -> None:
    """Let NODE take new tasks again (ends a drain)."""
    with connect(ctx) as client:
        _say(client.set_eligibility(name, True), json_out)


def _wait_empty(client: ServerClient, node: NodeInfo, timeout: float, quiet: bool) -> NodeInfo:
    shown = -1
    current = node

    def emptied() -> NodeInfo | None:
        nonlocal shown, current
        if current.tasks != shown and current.tasks and not quiet:
            console.print(f"{current.name}: {current.tasks} tasks left")
            shown = current.tasks
        if current.tasks == 0:
            return current
        current = client.node(current.name)
        return current if current.tasks == 0 else None

    try:
        return wait_until(emptied, timeout, f"node {node.name} to hold no task", interval=0.2)
    except WaitTimeout:
        fail(
            f"node {node.name} still holds {current.tasks} tasks after {timeout:g}s "
            "(see `theseus ps` for pending reasons: is there room elsewhere?)"
        )


@nodes_app.command()
def remove(ctx: typer.Context, node: NodeArgument) -> None:
    """Forget a node and revoke its certificate: its agent can no longer reach the cluster,
    and its tasks are replaced elsewhere. To bring the machine back, join it again."""
    with connect(ctx) as client:
        AccessApi(client).remove_node(node)
    console.print(f"removed node {node} (its certificate is revoked)")


def _say(node: NodeInfo, json_out: bool) -> None:
    if json_out:
        print_json(node)
        return
    console.print(f"{node.name}: {node.eligibility}, {node.tasks} tasks, {node.status}")


def register(app: typer.Typer) -> None:
    app.add_typer(nodes_app, name="nodes")
