"""Leases in a Cosmos container through the real SDK: races, fencing, takeover, seeding."""

from __future__ import annotations

import pytest
from azure.cosmos.aio import DatabaseProxy

from asyncmig.core.cosmos.leases import LeaseStore
from asyncmig.core.engine.checkpoint import RangeState
from asyncmig.errors import LeaseLost
from tests.helpers import unique

RANGES = {"[,80)": {"Range": {"min": "", "max": "80"}}, "[80,FF)": {"Range": {"min": "80", "max": "FF"}}}


async def _stores(database: DatabaseProxy, *owners: str, ttl: float = 30.0) -> list[LeaseStore]:
    container = await LeaseStore.ensure_container(database, unique("leases"))
    return [LeaseStore(container, "copy-1", owner, ttl_seconds=ttl) for owner in owners]


async def test_seeding_is_idempotent_and_keeps_progress(database: DatabaseProxy) -> None:
    (a,) = await _stores(database, "a")
    await a.seed(RANGES)
    lease = (await a.list())[0]
    won = await a.acquire(lease)
    assert won is not None
    await a.commit(won, RangeState(won.feed_range, position="p1", read=7))
    await a.seed(RANGES)  # a second worker seeding the same copy changes nothing
    leases = {lease.range_key: lease for lease in await a.list()}
    assert sorted(leases) == sorted(RANGES)
    assert (leases[won.range_key].state.position, leases[won.range_key].state.read) == ("p1", 7)


async def test_two_workers_racing_for_one_lease_cannot_both_win(database: DatabaseProxy) -> None:
    a, b = await _stores(database, "a", "b")
    await a.seed(RANGES)
    seen_by_a, seen_by_b = (await a.list())[0], (await b.list())[0]
    assert await a.acquire(seen_by_a) is not None
    assert await b.acquire(seen_by_b) is None  # b's etag is stale: 412, b lost the race
    assert b.stats.conflicts == 1
    assert [lease.owner for lease in await a.list()][0] == "a"


async def test_an_expired_lease_is_taken_over_and_the_old_owner_is_fenced(database: DatabaseProxy) -> None:
    a, b = await _stores(database, "a", "b", ttl=10.0)
    await a.seed(RANGES)
    held = await a.acquire((await a.list())[0], now=1000.0)
    assert held is not None
    held = await a.commit(held, RangeState(held.feed_range, position="after-page-3", read=300), now=1001.0)
    current = (await b.list())[0]
    assert await b.acquire(current, now=1005.0) is None  # not expired yet: a still owns it
    taken = await b.acquire(current, now=1012.0)  # expired at 1011
    assert taken is not None and taken.owner == "b" and taken.takeovers == 1
    assert (taken.state.position, taken.state.read) == ("after-page-3", 300)  # resumes from a's commit
    with pytest.raises(LeaseLost):
        await a.commit(held, RangeState(held.feed_range, position="after-page-4", read=400), now=1013.0)
    assert (await b.list())[0].state.position == "after-page-3"  # the fenced commit changed nothing


async def test_a_released_lease_is_free_at_once_and_keeps_its_state(database: DatabaseProxy) -> None:
    a, b = await _stores(database, "a", "b")
    await a.seed(RANGES)
    held = await a.acquire((await a.list())[0])
    assert held is not None
    held = await a.commit(held, RangeState(held.feed_range, position="p9", read=9))
    assert await a.release(held) is not None
    taken = await b.acquire((await b.list())[0])
    assert taken is not None and taken.state.position == "p9" and taken.takeovers == 0
