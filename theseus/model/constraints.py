"""Placement constraints as written in a deploy document: Marathon's ``[field, OPERATOR, value?]``.

Owns the shape and its validation (``deploy.<service>.constraints``); what each operator
accepts is decided by ``theseus.scheduler.constraints``. Fields: ``hostname`` (or
``@hostname``: the node's name) or any attribute an agent declared (``--attr rack=r1``).

==========  ==========================  ==================================================
operator    value                       a node is accepted when
==========  ==========================  ==================================================
UNIQUE      none                        no task of the group has the node's field value
CLUSTER     optional                    its value is ``value`` (or, without one, that of
                                        the tasks already placed)
GROUP_BY    optional count of groups    the group stays evenly spread over the values
MAX_PER     count, required             fewer than ``count`` tasks have its value
LIKE        regex, required             its value fully matches the regex
UNLIKE      regex, required             its value does not fully match (or it has none)
IS          text, required              its value equals ``value`` (numbers as 0.###)
==========  ==========================  ==================================================

A node without the field is accepted only by UNLIKE.
"""

from __future__ import annotations

import re
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, model_serializer, model_validator


class Operator(StrEnum):
    UNIQUE = "UNIQUE"
    CLUSTER = "CLUSTER"
    GROUP_BY = "GROUP_BY"
    MAX_PER = "MAX_PER"
    LIKE = "LIKE"
    UNLIKE = "UNLIKE"
    IS = "IS"


_NEEDS_VALUE = {Operator.MAX_PER, Operator.LIKE, Operator.UNLIKE, Operator.IS}
_NO_VALUE = {Operator.UNIQUE}
_COUNT = {Operator.MAX_PER, Operator.GROUP_BY}
_REGEX = {Operator.LIKE, Operator.UNLIKE}


class Constraint(BaseModel):
    """One ``[field, OPERATOR, value?]``; serialised back to that list."""

    model_config = ConfigDict(frozen=True)

    field: str
    operator: Operator
    value: str | None = None

    @model_validator(mode="before")
    @classmethod
    def _from_list(cls, data: Any) -> Any:
        if isinstance(data, dict):
            return data
        if not isinstance(data, list | tuple) or not 2 <= len(data) <= 3:
            raise ValueError("must be a list [field, OPERATOR] or [field, OPERATOR, value]")
        if not all(isinstance(part, str | int | float) for part in data):
            raise ValueError("field, operator and value must be strings")
        field, operator, *rest = (str(part) for part in data)
        known = ", ".join(op.value for op in Operator)
        if operator.upper() not in Operator.__members__:
            raise ValueError(f"unknown operator {operator!r}; use one of {known}")
        return {"field": field, "operator": operator.upper(), "value": rest[0] if rest else None}

    @model_validator(mode="after")
    def _value_fits_operator(self) -> Constraint:
        op, value = self.operator, self.value
        if not self.field:
            raise ValueError("the field must not be empty")
        if op in _NEEDS_VALUE and not value:
            raise ValueError(f"{op} needs a value")
        if op in _NO_VALUE and value is not None:
            raise ValueError(f"{op} takes no value")
        if op in _COUNT and value is not None and not (value.isdigit() and int(value) >= 1):
            raise ValueError(f"{op} takes a whole number of at least 1, not {value!r}")
        if op in _REGEX and value is not None:
            try:
                re.compile(value)
            except re.error as exc:
                raise ValueError(f"{op} value {value!r} is not a regex: {exc}") from None
        return self

    @model_serializer
    def _as_list(self) -> list[str]:
        parts = [self.field, self.operator.value]
        return parts if self.value is None else [*parts, self.value]

    def describe(self) -> str:
        parts = [self.operator.value, self.field]
        return " ".join(parts if self.value is None else [*parts, self.value])

    @property
    def count(self) -> int:
        """The numeric value of MAX_PER / GROUP_BY (0 when GROUP_BY has none)."""
        return int(self.value) if self.value else 0
