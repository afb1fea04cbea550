"""``POST /deploy``: the original Theseus's endpoint, document as JSON or YAML."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from fastapi import APIRouter, Depends, Request

from theseus.api.schemas import DeployResult, FieldChange, GroupChange, GroupPlan
from theseus.model.logs import describe_options
from theseus.model.spec import DeployDocument, parse_deploy_document, parse_document_text
from theseus.model.state import ClusterState
from theseus.reconciler.deploy import GroupChangePlan, plan_document
from theseus.reconciler.preview import preview
from theseus.server.context import ServerContext, context
from theseus.server.writes import TooLargeError

router = APIRouter()

# Groups one document may name (unchanged and absent ones included; at most
# ``MAX_GROUP_CHANGES`` of them may change).
MAX_DOCUMENT_GROUPS = 1000
# Documents up to this size are read on the event loop (a 4 KiB YAML one in about 2 ms);
# larger ones in a worker thread.
INLINE_PARSE_BYTES = 4096


def self_contained(schema: dict[str, Any]) -> dict[str, Any]:
    """``schema`` (pydantic's JSON schema of a model) with each ``#/$defs/...`` reference
    replaced by its definition: in the OpenAPI document, ``#`` is the whole document's root,
    where no ``$defs`` exists, so tools could not read the deploy document's schema."""
    definitions = schema.get("$defs", {})

    def inlined(node: Any) -> Any:
        if isinstance(node, list):
            return [inlined(item) for item in node]
        if not isinstance(node, dict):
            return node
        ref = node.get("$ref")
        if isinstance(ref, str) and ref.startswith("#/$defs/"):
            beside = {key: value for key, value in node.items() if key != "$ref"}
            return {**inlined(definitions[ref.removeprefix("#/$defs/")]), **inlined(beside)}
        return {key: inlined(value) for key, value in node.items() if key != "$defs"}

    result: dict[str, Any] = inlined(schema)
    return result


_DOCUMENT_SCHEMA = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {"schema": self_contained(DeployDocument.model_json_schema())},
            "application/x-yaml": {"schema": {"type": "string"}},
        },
    }
}


def _read_document(body: bytes) -> DeployDocument:
    document = parse_deploy_document(parse_document_text(body))
    named = len(document.deploy) + len(document.remove)
    if named > MAX_DOCUMENT_GROUPS:
        # Deciding on and answering every group happens on the event loop: bounded here.
        raise TooLargeError(
            f"a document may name at most {MAX_DOCUMENT_GROUPS} groups under deploy and "
            f"remove together, this one names {named}; split it"
        )
    return document


def changes_result(changes: list[GroupChangePlan]) -> DeployResult:
    return DeployResult(
        changes=[
            GroupChange(
                service=c.key.service,
                labels=list(c.key.labels),
                action=c.action,
                instances=c.instances,
                deployment=c.deployment,
            )
            for c in changes
        ]
    )


# OpenAPI links: where each changed group's ``service`` leads (tools and the API fuzzer's
# stateful phase follow them from a deploy to the group's own operations).
_GROUP_OPERATIONS = {
    "ScaleGroup": "~1v1~1groups~1{service}~1scale/post",
    "RemoveGroup": "~1v1~1groups~1{service}/delete",
    "GroupVersions": "~1v1~1groups~1{service}~1versions/get",
    "RollbackGroup": "~1v1~1groups~1{service}~1rollback/post",
    # No link to POST /v1/groups/{service}/restart: each call replaces every task again (it
    # is no operation to chain blindly), and the API fuzzer's stateful phase, which follows
    # these links, needs answers that repeat for a repeated sequence.
}
_LINKS: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "What changed, per group",
        "links": {
            name: {
                "operationRef": f"#/paths/{pointer}",
                "parameters": {"service": "$response.body#/changes/0/service"},
            }
            for name, pointer in _GROUP_OPERATIONS.items()
        },
    }
}


@router.post(
    "/deploy",
    response_model=DeployResult,
    openapi_extra=_DOCUMENT_SCHEMA,
    responses=_LINKS,
    tags=["deploy"],
)
async def deploy(
    request: Request, dry_run: bool = False, ctx: ServerContext = Depends(context)
) -> DeployResult:
    """Apply a ``deploy:``/``remove:`` document atomically; answers at once with what changed
    per group (rollouts continue in the background). ``dry_run``: change nothing, say what
    would change, where new tasks would go and which would wait, and why (``theseus plan``)."""
    body = await request.body()  # at most ``--max-request-bytes`` (``BodyLimit``)
    return await apply_document(body, dry_run, ctx)


async def apply_document(body: bytes, dry_run: bool, ctx: ServerContext) -> DeployResult:
    """A deploy document's text applied (or only planned): ``POST /deploy``'s work, also
    done by the dashboard's deploy page (``theseus.server.ui``)."""
    # Decoding and validating a document of some MiB takes long: in a worker thread, so that
    # every other caller (agents' heartbeats, the leader's lease) is served meanwhile. A
    # small one (most of them: a service or two) takes under 2 ms, less than the hand-off
    # to a thread and back costs a busy loop (two of its rounds, each of tens of ms during
    # a big deploy).
    if len(body) <= INLINE_PARSE_BYTES:
        document = _read_document(body)
    else:
        document = await asyncio.to_thread(_read_document, body)

    def planner(state: ClusterState) -> list[GroupChangePlan]:
        return plan_document(document, state.groups, time.time())

    if not dry_run:
        return changes_result(await ctx.writer.apply_group_changes(planner))
    # The same decision as the deploy, refused exactly as it would be; then the first
    # reconcile pass it would lead to.
    state, changes = ctx.writer.preview_group_changes(planner)
    previews = await asyncio.to_thread(preview, state, changes, time.time())
    result = changes_result(changes)
    for change, planned in zip(changes, result.changes, strict=True):
        found = previews.get(change.key.key)
        if found is not None:
            planned.plan = GroupPlan(
                placed=dict(found.placed),
                pending=dict(found.pending),
                stopping=found.stopping,
                diff=[FieldChange(field=f, old=o, new=n) for f, o, n in found.diff],
            )
            if change.record is not None:
                fence = change.record.spec.stop_after_server_loss_seconds
                planned.plan.stop_after_server_loss = fence
                planned.plan.logs = describe_options(change.record.spec.logs)
    result.dry_run = True
    return result
