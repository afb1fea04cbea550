"""The OpenAPI description (``/openapi.json``) is one that tools can read: it validates as
OpenAPI 3.1 and every ``$ref`` in it resolves (``POST /deploy``'s schema pointed at
``#/$defs/...``, which do not exist at the document's root)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from openapi_spec_validator import validate

from theseus.server.app import create_app
from theseus.server.config import ServerConfig
from theseus.server.routes.deploy import self_contained


@pytest.fixture(scope="module")
def description() -> dict[str, Any]:
    return create_app(ServerConfig()).openapi()


def references(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref" and isinstance(value, str):
                yield value
            else:
                yield from references(value)
    elif isinstance(node, list):
        for item in node:
            yield from references(item)


def resolve(document: dict[str, Any], ref: str) -> Any:
    assert ref.startswith("#/"), f"{ref}: only references inside the document are expected"
    node: Any = document
    for part in ref[2:].split("/"):
        part = part.replace("~1", "/").replace("~0", "~")
        assert isinstance(node, dict) and part in node, f"{ref} does not resolve"
        node = node[part]
    return node


def test_every_reference_resolves(description: dict[str, Any]) -> None:
    refs = set(references(description))
    assert refs, "the description refers to its components"
    for ref in sorted(refs):
        resolve(description, ref)


def test_every_link_leads_to_an_operation_with_that_parameter(
    description: dict[str, Any],
) -> None:
    links = [
        link
        for operations in description["paths"].values()
        for operation in operations.values()
        for response in operation["responses"].values()
        for link in response.get("links", {}).values()
    ]
    assert links, "POST /deploy links to the operations on the groups it changed"
    for link in links:
        target = resolve(description, link["operationRef"])
        names = {parameter["name"] for parameter in target.get("parameters", [])}
        assert set(link["parameters"]) <= names, link


def test_the_description_is_valid_openapi(description: dict[str, Any]) -> None:
    validate(description)


def test_the_deploy_document_schema_is_self_contained(description: dict[str, Any]) -> None:
    body = description["paths"]["/deploy"]["post"]["requestBody"]["content"]
    schema = body["application/json"]["schema"]
    assert "$defs" not in str(schema)
    group = schema["properties"]["deploy"]["patternProperties"]
    (spec,) = group.values()
    assert "image" in spec["properties"] and spec["additionalProperties"] is False


def test_inlining_keeps_what_sits_beside_a_reference() -> None:
    schema = {
        "$defs": {"Port": {"type": "integer", "maximum": 65535}},
        "properties": {"port": {"$ref": "#/$defs/Port", "description": "the port"}},
    }
    assert self_contained(schema) == {
        "properties": {"port": {"type": "integer", "maximum": 65535, "description": "the port"}}
    }
