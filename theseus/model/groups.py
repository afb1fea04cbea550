"""Group identity and the stored group record.

A group is a service plus a *set* of labels: ``['frontend', 'dev']`` and ``['dev', 'frontend']``
are the same group. ``GroupKey.key`` is the one string form used in etcd keys and task records.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from functools import cached_property, lru_cache

from pydantic import BaseModel, ConfigDict

from theseus.model.spec import GroupSpec


@dataclass(frozen=True, order=True)
class GroupKey:
    """Service name plus the sorted, de-duplicated label tuple."""

    service: str
    labels: tuple[str, ...]

    @classmethod
    def of(cls, service: str, labels: Iterable[str]) -> GroupKey:
        return _group_key(service, tuple(labels))

    # Cached on the (frozen) instance: a reconcile pass asks every task's group key several
    # times, and ``of`` hands out one instance per group, so each is worked out once.
    @cached_property
    def label_key(self) -> str:
        """The labels as compact JSON, e.g. ``["dev","frontend"]``: any printable label fits."""
        return _label_key(self.labels)

    @cached_property
    def key(self) -> str:
        return f"{self.service}/{self.label_key}"

    @classmethod
    def parse(cls, key: str) -> GroupKey:
        service, _, label_key = key.partition("/")
        return cls.of(service, json.loads(label_key))

    def __str__(self) -> str:
        return f"{self.service}[{','.join(self.labels)}]" if self.labels else self.service


@lru_cache(maxsize=65536)
def _group_key(service: str, labels: tuple[str, ...]) -> GroupKey:
    # Asked for every task, several times a pass (``TaskRecord.group_key``): a cluster has a
    # few hundred groups, so their keys are memoised rather than sorted again each time.
    return GroupKey(service, tuple(sorted(set(labels))))


@lru_cache(maxsize=4096)
def _label_key(labels: tuple[str, ...]) -> str:
    # Asked for on every task of every reconcile pass: the handful of label sets are memoised.
    return json.dumps(list(labels), separators=(",", ":"), ensure_ascii=False)


# A restart (``POST /v1/groups/{service}/restart``) gives a group a version of its own with
# the same spec, so that the rolling update replaces every task: the spec's digest, this mark
# and a count (``3f2a9c1b7e4d.r1``).
RESTART_MARK = ".r"


def spec_digest(version: str) -> str:
    """The spec's digest (``GroupSpec.version``) a group's version was made from."""
    return version.partition(RESTART_MARK)[0]


def restarted_version(version: str) -> str:
    """The version a restart gives a group whose version is ``version``."""
    digest, _, count = version.partition(RESTART_MARK)
    return f"{digest}{RESTART_MARK}{int(count) + 1 if count.isdigit() else 1}"


def version_for(spec: GroupSpec, existing: GroupRecord | None) -> str:
    """The version of a group given ``spec``: its digest, unless the group already runs a
    restart of that very digest (a change that restarts nothing, such as ``instances``,
    must not replace the tasks a restart started)."""
    digest = spec.version()
    if existing is not None and spec_digest(existing.version) == digest:
        return existing.version
    return digest


class GroupRecord(BaseModel):
    """The desired state of one group, as stored in etcd by the deploy and scale routes."""

    model_config = ConfigDict(frozen=True)

    service: str
    labels: list[str]
    spec: GroupSpec
    version: str
    created_at: float
    updated_at: float
    # Its number in the group's spec history (``theseus.model.deployments``); 0: written
    # before histories were kept.
    version_number: int = 0

    @property
    def group_key(self) -> GroupKey:
        return GroupKey.of(self.service, self.labels)

    @property
    def instances(self) -> int:
        return self.spec.instances
