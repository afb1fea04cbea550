"""Inputs and answers of the routes the server serves as plain Starlette routes.

The agents' heartbeats, assignment polls and reports are nearly all of the server's requests
during a deploy (``theseus.server.routes.agent``). As FastAPI routes, each request spent more
on FastAPI's dependency solving, parameter handling and response model than on its own work
(``bench/agent_requests.py``). Those routes take the bare request instead and use these
helpers: the same pydantic models validate their inputs, and a bad input raises the
``RequestValidationError`` FastAPI would have raised, so the app's handler answers the same
422 naming the field (``theseus.server.app``). ``DescribedApp`` keeps them in
``/openapi.json``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any, TypeVar

from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from pydantic import BaseModel, TypeAdapter, ValidationError
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute
from starlette.types import Receive, Scope, Send

from theseus.server.hot_door import HotDoor

M = TypeVar("M", bound=BaseModel)
T = TypeVar("T")


def body_of(model: type[M], raw: bytes) -> M:
    """``raw`` (a JSON request body) as ``model``; a 422 naming the bad fields otherwise."""
    try:
        return model.model_validate_json(raw)
    except ValidationError as exc:
        raise _invalid(("body",), exc) from None


def query_value(request: Request, name: str, adapter: TypeAdapter[T], default: T) -> T:
    """The query parameter ``name`` as ``adapter``'s type (``default`` when absent); a 422
    naming it otherwise."""
    raw = request.query_params.get(name)
    if raw is None:
        return default
    try:
        return adapter.validate_python(raw)
    except ValidationError as exc:
        raise _invalid(("query", name), exc) from None


def json_answer(value: Any) -> Response:
    return Response(json.dumps(value, separators=(",", ":")), media_type="application/json")


def _invalid(where: tuple[str, ...], exc: ValidationError) -> RequestValidationError:
    return RequestValidationError(
        [{**error, "loc": (*where, *error["loc"])} for error in exc.errors(include_url=False)]
    )


class DescribedApp(FastAPI):
    """FastAPI, whose OpenAPI document also describes routes it serves as plain Starlette
    routes: ``described`` are FastAPI routes declaring their parameters, body and answer,
    used for the document only (FastAPI describes only its own routes). Requests its ``door``
    matches go to it, past the app's layers (``theseus.server.hot_door``)."""

    def __init__(self, *, described: Sequence[BaseRoute], **settings: Any) -> None:
        super().__init__(**settings)
        self.described = list(described)
        self.door: HotDoor | None = None  # the agents' hot routes (``theseus.server.hot_door``)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        door = self.door
        if door is not None and scope["type"] == "http":
            matched = door.match(scope)
            if matched is not None:
                scope["app"] = self  # as Starlette sets it: ``request.app``
                await door.serve(*matched, scope, receive, send)
                return
        await super().__call__(scope, receive, send)

    def openapi(self) -> dict[str, Any]:
        if not self.openapi_schema:
            self.openapi_schema = get_openapi(
                title=self.title,
                version=self.version,
                openapi_version=self.openapi_version,
                description=self.description,
                routes=[*self.described, *self.routes],
                tags=self.openapi_tags,
                servers=self.servers,
                separate_input_output_schemas=self.separate_input_output_schemas,
            )
        return self.openapi_schema
