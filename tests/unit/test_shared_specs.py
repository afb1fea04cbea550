"""Task records read from etcd share their group's spec object (``SharedSpecs``), and only
ever an equal one: what a reader sees of each record is unchanged."""

from __future__ import annotations

import asyncio

from tests.kit.builders import make_group, make_task
from theseus.model.tasks import TaskRecord
from theseus.store import keys
from theseus.store.base import Put
from theseus.store.cache import StateCache
from theseus.store.encoding import encode
from theseus.store.memory import MemoryStore
from theseus.store.shared_specs import SPECS_PER_VERSION, SharedSpecs


def parsed(task: TaskRecord) -> TaskRecord:
    """``task`` as a server reads it from etcd: a spec object of its own."""
    return TaskRecord.model_validate_json(encode(task))


def test_equal_specs_are_shared_and_the_records_unchanged() -> None:
    group = make_group()
    tasks = [make_task(group) for _ in range(3)]
    shared = SharedSpecs()
    read = [shared.share(parsed(task)) for task in tasks]
    assert read == tasks
    assert read[0].spec is read[1].spec is read[2].spec


def test_a_version_with_several_specs_keeps_each_its_own() -> None:
    # A scale changes ``instances``, which the version leaves out: the group's older tasks
    # carry the older spec under the same version.
    group = make_group(instances=2)
    scaled = group.model_copy(update={"spec": group.spec.model_copy(update={"instances": 5})})
    assert scaled.version == group.version
    shared = SharedSpecs()
    old = [shared.share(parsed(make_task(group))) for _ in range(2)]
    new = [shared.share(parsed(make_task(scaled))) for _ in range(2)]
    again = shared.share(parsed(make_task(group)))
    assert [t.spec.instances for t in old + new + [again]] == [2, 2, 5, 5, 2]
    assert old[0].spec is old[1].spec is again.spec
    assert new[0].spec is new[1].spec and new[0].spec is not old[0].spec


def test_only_the_last_specs_of_a_version_are_kept() -> None:
    group = make_group(instances=1)
    shared = SharedSpecs()
    first = shared.share(parsed(make_task(group)))
    for instances in range(2, SPECS_PER_VERSION + 2):  # as many others as are kept
        spec = group.spec.model_copy(update={"instances": instances})
        shared.share(parsed(make_task(group.model_copy(update={"spec": spec}))))
    later = shared.share(parsed(make_task(group)))
    assert later == make_task(group, id=later.id, host_ports=later.host_ports)
    assert later.spec is not first.spec  # forgotten, kept again from here on
    assert shared.share(parsed(make_task(group))).spec is later.spec


async def test_the_cache_shares_specs_when_it_loads_and_when_it_follows() -> None:
    group = make_group()
    store = MemoryStore()
    loaded = [make_task(group) for _ in range(2)]
    await store.commit([Put(keys.task_key(t.id), encode(t)) for t in loaded])
    cache = StateCache(store)
    following = asyncio.create_task(cache.run())
    try:
        await asyncio.wait_for(cache.wait_ready(), 5)
        followed = [make_task(group) for _ in range(2)]
        revision = await store.commit([Put(keys.task_key(t.id), encode(t)) for t in followed])
        assert revision is not None
        assert await cache.wait_for_revision(revision, timeout=5)
    finally:
        following.cancel()
    tasks = [cache.state.tasks[t.id] for t in loaded + followed]
    assert tasks == loaded + followed
    assert len({id(t.spec) for t in tasks}) == 1
