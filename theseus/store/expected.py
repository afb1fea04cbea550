"""The records a server is writing itself, kept until its cache's watch brings them back.

``StateCache`` holds one (``StateCache.expect``, called by the writer and the leader before
they commit): when the watch returns a value this server wrote, the record is taken as it is
instead of parsed again. A 10,000-task deploy is 20,000 records, a second of parsing on the
event loop.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import NamedTuple, TypeVar

from pydantic import BaseModel

M = TypeVar("M", bound=BaseModel)
MAX_EXPECTED = 100_000


class Expected(NamedTuple):
    """A record this server is writing, and its encoding."""

    value: bytes
    record: BaseModel


class ExpectedRecords:
    """By key: the record about to be written there, and its encoding."""

    def __init__(self) -> None:
        self._by_key: dict[str, Expected] = {}

    def expect(self, key: str, value: bytes, record: BaseModel) -> None:
        if len(self._by_key) >= MAX_EXPECTED:  # writes that failed leave theirs behind
            self._by_key.clear()
        self._by_key[key] = Expected(value, record)

    def expect_all(self, expected: Mapping[str, Expected]) -> None:
        """Every one of ``expected`` at once: a plan's, made where it was encoded (a dict
        update of 50,000 entries instead of as many calls on the event loop)."""
        if len(self._by_key) + len(expected) > MAX_EXPECTED:
            self._by_key.clear()
        self._by_key.update(expected)

    def decode(self, key: str, value: bytes, model: type[M]) -> M:
        """``value``, read at ``key``, as ``model``: the expected record if it is that value's,
        else parsed."""
        expected = self._by_key.pop(key, None)
        if expected is not None and expected.value == value and isinstance(expected.record, model):
            return expected.record
        return model.model_validate_json(value)
