"""Dependencies between services (Marathon ``dependencies``; the original's docker ``links``).

Owns two pure decisions:

* ``dependency_errors``: whether a set of group changes leaves every dependency satisfiable.
  Each named service must exist once the change is applied, a service may not need itself,
  and the needs may not form a cycle. Removing a service that a remaining one needs is
  refused. Called by the server's ``Writer`` for every deploy, scale and remove, so a bad
  document changes nothing (422, with the path of the offending key).
* ``Readiness``: during a reconcile pass, whether a group's new tasks may start. They wait
  (with a pending reason) until every group of each service it needs has its healthy
  capacity ready: ``ceil(instances * minimum_health_capacity)`` ready tasks, at least one.
  A group that is itself being deployed also waits for the deployments of those groups to
  finish (Marathon: "upgrade db fully before app"). So a document that deploys ``db`` and
  ``web`` (which needs ``db``) starts ``db`` first, and an update of both updates ``db``
  first; a ``web`` task that merely replaces a dead one waits only for capacity.
  Stopping is the other way round: the reconciler keeps a removed service's tasks running
  while tasks of a service that needs it are still running (``needed_services``).
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable

from theseus.model.groups import GroupRecord
from theseus.model.spec import GroupSpec
from theseus.model.state import ClusterState
from theseus.model.tasks import Desired, TaskRecord
from theseus.reconciler.deploy import GroupChangePlan


def dependency_errors(
    groups: dict[str, GroupRecord], changes: list[GroupChangePlan]
) -> list[dict[str, str]]:
    """One ``{path, message}`` per problem the changes would leave; empty when none."""
    if not _may_add_a_problem(groups, changes):
        return []
    after: dict[str, tuple[str, GroupSpec]] = {
        key: (group.service, group.spec) for key, group in groups.items()
    }
    changed_services: set[str] = set()
    removed_services: set[str] = set()
    for change in changes:
        if change.action == "removed":
            after.pop(change.key.key, None)
            removed_services.add(change.key.service)
        elif change.record is not None:
            after[change.key.key] = (change.key.service, change.record.spec)
            changed_services.add(change.key.service)
    needs: dict[str, set[str]] = defaultdict(set)
    for service, spec in after.values():
        needs[service].update(spec.dependencies)
    existing = set(needs)
    errors: list[dict[str, str]] = []
    for service in sorted(needs):
        for dependency in sorted(needs[service]):
            if dependency == service:
                errors.append(_error(service, f"{service} cannot depend on itself"))
            elif dependency not in existing:
                if dependency in removed_services:
                    errors.append(
                        {"path": f"remove.{dependency}", "message": f"{service} depends on it"}
                    )
                elif service in changed_services:
                    errors.append(_error(service, f"no service {dependency!r} is deployed"))
    cycle = _find_cycle({s: {d for d in ds if d != s and d in existing} for s, ds in needs.items()})
    if cycle is not None:
        first = next((s for s in cycle if s in changed_services), cycle[0])
        errors.append(_error(first, "a dependency cycle: " + " -> ".join(cycle)))
    return errors


def _may_add_a_problem(groups: dict[str, GroupRecord], changes: list[GroupChangePlan]) -> bool:
    """Whether the changes remove a service, or give a group a need it did not have, or one
    that is not deployed. Any other change (a scale, a new image, a group without needs) adds
    no edge to the graph of needs and takes no service out of it, so it can leave no problem
    that the groups did not have before, and they had none: every change that made them was
    checked. A deploy then costs a few lookups instead of a walk over every group's needs
    (at 500 groups, a scale's whole decision took 0.94 ms, and 0.10 ms with this)."""
    services: set[str] | None = None
    for change in changes:
        if change.action == "removed":
            return True
        if change.record is None or not change.record.spec.dependencies:
            continue
        needs = set(change.record.spec.dependencies)
        before = groups.get(change.key.key)
        if before is None or not needs <= set(before.spec.dependencies):
            return True
        if services is None:
            services = {group.service for group in groups.values()}
        if change.key.service in needs or not needs <= services:
            return True
    return False


def _error(service: str, message: str) -> dict[str, str]:
    return {"path": f"deploy.{service}.dependencies", "message": message}


def _find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """A cycle as ``[a, b, ..., a]``, or ``None`` (iterative depth-first search)."""
    done: set[str] = set()
    for root in sorted(graph):
        if root in done:
            continue
        path: list[str] = [root]
        on_path = {root}
        stack = [iter(sorted(graph.get(root, ())))]
        while stack:
            following = next(stack[-1], None)
            if following is None:
                stack.pop()
                finished = path.pop()
                on_path.discard(finished)
                done.add(finished)
                continue
            if following in on_path:
                return [*path[path.index(following) :], following]
            if following in done:
                continue
            path.append(following)
            on_path.add(following)
            stack.append(iter(sorted(graph.get(following, ()))))
    return None


class Readiness:
    """Per reconcile pass: which services have their healthy capacity ready (memoised)."""

    def __init__(self, state: ClusterState) -> None:
        self._state = state
        self._groups_of: dict[str, list[GroupRecord]] = defaultdict(list)
        for group in state.groups.values():
            self._groups_of[group.service].append(group)
        self._shortfall: dict[str, str | None] = {}
        self._deploying = {
            d.group: d.id for d in state.deployments.values() if d.status == "running"
        }

    def waiting_reason(self, task: TaskRecord) -> str | None:
        """Why ``task`` must not start yet, or ``None`` when it may."""
        dependencies = task.spec.dependencies
        for dependency in dependencies:
            if dependency not in self._shortfall:
                self._shortfall[dependency] = self._service_shortfall(dependency)
            shortfall = self._shortfall[dependency]
            if shortfall is not None:
                return f"waiting for dependency {dependency}: {shortfall}"
        if dependencies and task.group_key.key in self._deploying:
            for dependency in dependencies:
                for group in self._groups_of.get(dependency, []):
                    deployment = self._deploying.get(group.group_key.key)
                    if deployment is not None:
                        return f"waiting for dependency {dependency}: deployment {deployment}"
        return None

    def _service_shortfall(self, service: str) -> str | None:
        for group in self._groups_of.get(service, []):
            if group.instances == 0:
                continue
            capacity = group.spec.upgrade_strategy.minimum_health_capacity
            wanted = max(1, math.ceil(group.instances * capacity))
            ready = sum(
                1
                for task in self._state.tasks_of(group.group_key.key)
                if task.desired is Desired.RUN and self._state.task_ready(task)
            )
            if ready < wanted:
                return f"{ready} of {wanted} tasks ready"
        return None


def needed_services(state: ClusterState, tasks: Iterable[TaskRecord]) -> set[str]:
    """Services that some still-active task needs: their removal waits for those to end."""
    needed: set[str] = set()
    for task in tasks:
        if not task.spec.dependencies or task.node is None:
            continue
        if not state.task_state(task).terminal:
            needed.update(task.spec.dependencies)
    return needed
