"""The event stream's HTTP callbacks (``theseus event-subscription add|list|remove``), all
admin's: a callback sends the cluster's events to any URL.

* ``POST /v1/event-subscriptions {url, topics, services}``: the URL must be http(s) with a
  host (a 422 names ``url`` otherwise); the receiver gets the events after this write.
* ``GET /v1/event-subscriptions``: each with the last event its receiver acknowledged.
* ``DELETE /v1/event-subscriptions/{id}``.

The records are ``theseus.server.events.subscriptions``'; the leader delivers
(``theseus.server.events.callbacks``).
"""

from __future__ import annotations

from fastapi import APIRouter, Depends, HTTPException, Request, Response

from theseus.api.events import Subscription, SubscriptionCreate, SubscriptionInfo, SubscriptionList
from theseus.server.context import ServerContext, context
from theseus.server.events.subscriptions import Subscriptions, TooManySubscriptions, cursor_id
from theseus.server.routes.access import caller_of

router = APIRouter(tags=["events"])


@router.post("/v1/event-subscriptions", response_model=Subscription, status_code=201)
async def create_subscription(
    body: SubscriptionCreate, request: Request, ctx: ServerContext = Depends(context)
) -> Subscription:
    caller = caller_of(request)
    try:
        return await Subscriptions(ctx.store).create(body, f"{caller.kind}:{caller.name}")
    except TooManySubscriptions as exc:
        raise HTTPException(409, str(exc)) from exc


@router.get("/v1/event-subscriptions", response_model=SubscriptionList)
async def list_subscriptions(ctx: ServerContext = Depends(context)) -> SubscriptionList:
    subscriptions = Subscriptions(ctx.store)
    cursors = await subscriptions.cursors()
    return SubscriptionList(
        subscriptions=[
            SubscriptionInfo(
                **s.subscription.model_dump(),
                delivered=cursor_id(cursors.get(s.subscription.id)),
            )
            for s in await subscriptions.load()
        ]
    )


@router.delete("/v1/event-subscriptions/{id}", status_code=204)
async def delete_subscription(id: str, ctx: ServerContext = Depends(context)) -> Response:
    if not await Subscriptions(ctx.store).delete(id):
        raise HTTPException(404, f"no event subscription {id}")
    return Response(status_code=204)
