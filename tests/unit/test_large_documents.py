"""Large and hostile deploy documents: decoding and validating one happens off the server's
event loop (others are answered meanwhile), a document naming too many groups is refused
whole, and text no parser can read (nested too deeply, NaN) is a 422 naming the document,
never a 500."""

from __future__ import annotations

import asyncio
import json
import threading
import time

import pytest
import yaml

from tests.kit.app import inprocess_api
from theseus.model.spec import DeployDocument, SpecError, parse_document_text
from theseus.server.routes import deploy as deploy_route
from theseus.server.routes.deploy import MAX_DOCUMENT_GROUPS

read_document = deploy_route._read_document

SPEC = {"image": "theseus/busybox:latest", "instances": 1, "cpus": 0.1, "mem": 32}


def large_yaml_document(groups: int = MAX_DOCUMENT_GROUPS, labels: int = 20) -> bytes:
    """A valid document of about 0.4 MiB of block-style YAML (the slowest to decode): one
    group deployed, and many removed that do not exist (nothing to write)."""
    remove = {
        f"service-{i:05d}": {"labels": [f"label-{i}-{j}" for j in range(labels)]}
        for i in range(groups - 1)
    }
    return yaml.safe_dump({"deploy": {"web": SPEC}, "remove": remove}).encode()


async def test_others_are_answered_while_a_large_document_is_decoded(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The decoding holds on until three health calls have been answered meanwhile: off the
    loop, they are; on it, none could be, and the decoding gives up waiting and fails."""
    document = large_yaml_document()
    assert len(document) > 300_000
    began, release = threading.Event(), threading.Event()

    def held(body: bytes) -> DeployDocument:
        began.set()
        try:
            return read_document(body)
        finally:
            if not release.wait(30):
                raise AssertionError("no call was answered while the document was decoded")

    monkeypatch.setattr(deploy_route, "_read_document", held)
    async with inprocess_api() as client:
        deploying = asyncio.create_task(
            client.post("/deploy", content=document, headers={"content-type": "application/x-yaml"})
        )
        answered_meanwhile = 0
        deadline = time.monotonic() + 60
        while not deploying.done():
            assert time.monotonic() < deadline, "the deploy did not end within 60 s"
            await asyncio.sleep(0)  # lets the deploy's task run (the ASGI calls may not)
            assert (await client.get("/v1/health")).status_code == 200
            if began.is_set() and not release.is_set():
                answered_meanwhile += 1
                if answered_meanwhile >= 3:
                    release.set()
        deployed = await deploying
    assert deployed.status_code == 200, deployed.text
    assert len(deployed.json()["changes"]) == MAX_DOCUMENT_GROUPS
    assert answered_meanwhile >= 3


async def test_a_document_naming_too_many_groups_is_refused_whole() -> None:
    document = {
        "deploy": {"web": SPEC},
        "remove": {f"s{i}": {} for i in range(MAX_DOCUMENT_GROUPS)},
    }
    async with inprocess_api() as client:
        for params in ({}, {"dry_run": "true"}):
            answer = await client.post("/deploy", params=params, json=document)
            assert answer.status_code == 413
            assert f"at most {MAX_DOCUMENT_GROUPS} groups" in answer.json()["message"]
        assert (await client.get("/v1/groups")).json()["groups"] == []


@pytest.mark.parametrize(
    "text",
    [
        "[" * 5000 + "]" * 5000,  # JSON's parser recurses: it gave up with a RecursionError
        "deploy: " + "[" * 5000 + "]" * 5000,
        '{"deploy": {"web": {"image": "i", "cpus": NaN}}}',
    ],
)
async def test_unreadable_or_unacceptable_text_is_a_422_not_a_500(text: str) -> None:
    async with inprocess_api() as client:
        answer = await client.post("/deploy", content=text)
    assert answer.status_code == 422, answer.text
    assert answer.json()["details"][0]["path"] in ("(document)", "deploy", "deploy.web.cpus")


def test_json_and_yaml_read_a_document_the_same() -> None:
    document = {"deploy": {"web": {**SPEC, "environment": {"A": "1", "B": None}}}}
    assert parse_document_text(yaml.safe_dump(document)) == document
    assert parse_document_text(json.dumps(document)) == document
    with pytest.raises(SpecError, match="nested too deeply|nesting depth"):
        parse_document_text("[" * 100_000 + "]" * 100_000)
