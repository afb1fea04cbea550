"""What each Marathon constraint operator accepts (pure; README.md's ``constraints`` key).

``accepts(constraint, value, placed, instances, expected_groups)`` decides for one node: its
``value`` of the constraint's field (``None`` when the node lacks it), how many of the group's
tasks are already placed per value (``placed``), the group's ``instances`` and, for GROUP_BY
without a count, how many distinct values the ready nodes offer or the group's tasks hold.
``placed`` counts the tasks that stay on their nodes, ineligible ones included (a draining
node's tasks are being moved off and do not count). ``spread_victims`` picks the
tasks a scale-down stops so that a GROUP_BY spread stays even. The placer and the reconciler
call them; ``theseus.model.constraints`` owns the shape.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable, Sequence
from decimal import ROUND_HALF_EVEN, Decimal, InvalidOperation
from functools import lru_cache
from typing import TypeVar

from theseus.model.constraints import Constraint, Operator
from theseus.model.nodes import NodeRecord

T = TypeVar("T")
HOSTNAME_FIELDS = frozenset({"hostname", "@hostname"})


def field_value(node: NodeRecord, field: str) -> str | None:
    """The node's value of ``field``: its name for ``hostname``, else an attribute."""
    if field in HOSTNAME_FIELDS:
        return node.name
    return node.attributes.get(field.removeprefix("@"))


def accepts(
    constraint: Constraint,
    value: str | None,
    placed: Counter[str | None],
    instances: int,
    expected_groups: int,
) -> bool:
    op = constraint.operator
    if value is None:
        return op is Operator.UNLIKE
    here = placed.get(value, 0)
    if op is Operator.UNIQUE:
        return here == 0
    if op is Operator.CLUSTER:
        if constraint.value is not None:
            return value == constraint.value
        held = [v for v, n in placed.items() if n > 0]
        return not held or value in held
    if op is Operator.MAX_PER:
        return here < constraint.count
    if op is Operator.LIKE:
        return _regex(constraint.value or "").fullmatch(value) is not None
    if op is Operator.UNLIKE:
        return _regex(constraint.value or "").fullmatch(value) is None
    if op is Operator.IS:
        return _same(value, constraint.value or "")
    return _group_by_accepts(here, placed, instances, constraint.count or expected_groups)


def _group_by_accepts(here: int, placed: Counter[str | None], instances: int, groups: int) -> bool:
    """Marathon's GROUP_BY: ``instances`` split evenly over ``groups`` values, the remainder
    one each to as many values."""
    groups = max(groups, 1)
    per_group, remainder = divmod(instances, groups)
    in_use = [n for v, n in placed.items() if v is not None and n > 0]
    if here == 0:
        return len(in_use) < groups
    if here < per_group:
        return True
    above = sum(1 for n in in_use if n > per_group)
    return here == per_group and above < remainder


def spread_victims(tasks: Sequence[T], value_of: Callable[[T], str | None], count: int) -> list[T]:
    """``count`` of ``tasks`` (in their order of preference) to stop, each taken from the
    value that holds the most, so that a GROUP_BY spread stays even."""
    remaining = list(tasks)
    load: Counter[str | None] = Counter(value_of(t) for t in remaining)
    victims: list[T] = []
    for _ in range(min(count, len(remaining))):
        heaviest = max(load.values())
        victim = next(t for t in remaining if load[value_of(t)] == heaviest)
        remaining.remove(victim)
        load[value_of(victim)] -= 1
        victims.append(victim)
    return victims


@lru_cache(maxsize=256)
def _regex(pattern: str) -> re.Pattern[str]:
    return re.compile(pattern)


def _same(value: str, wanted: str) -> bool:
    """Text equality; numbers compared after Marathon's 0.### HALF_EVEN formatting."""
    if value == wanted:
        return True
    try:
        step = Decimal("0.001")
        left = Decimal(value).quantize(step, rounding=ROUND_HALF_EVEN)
        right = Decimal(wanted).quantize(step, rounding=ROUND_HALF_EVEN)
    except InvalidOperation:
        return False
    return left == right
