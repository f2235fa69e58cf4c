"""The budget several workers share, on the virtual-time loop: exact rates, no burst after a start or
an idle spell, each target range held to its share."""

from __future__ import annotations

import anyio

from asyncmig.core.engine.governor import Governor
from asyncmig.core.engine.shared_budget import BudgetBank, SharedBudget
from tests.core.test_governor import run


async def _spend(governor: Governor, lane: str, ru: float, until: float, spent: dict[str, float]) -> None:
    while anyio.current_time() < until:
        async with governor.request(lane, ru) as ticket:
            ticket.charge = ru
        spent[lane] = spent.get(lane, 0.0) + ru


def test_two_workers_together_spend_the_budget_not_twice_it() -> None:
    async def main() -> float:
        bank = BudgetBank(1000.0)
        spent: dict[str, float] = {}
        workers = [Governor(None, shared=SharedBudget(bank, f"w{i}", 1000.0)) for i in range(2)]
        for governor in workers:
            governor.share_budget(["0"])
        async with anyio.create_task_group() as group:
            for governor in workers:
                for _ in range(4):
                    group.start_soon(_spend, governor, "0", 10.0, 10.0, spent)
        return sum(spent.values())

    total = run(main)
    assert 9_500 <= total <= 10_300  # 10 s at 1,000 RU/s, whatever the number of workers


def test_the_bank_starts_empty_and_an_idle_spell_banks_at_most_a_quarter_second() -> None:
    async def main() -> tuple[float, float]:
        bank = BudgetBank(1000.0)
        first = await bank.grant("w", "0", 1, 10_000.0)
        await anyio.sleep(60)  # idle
        after_idle = await bank.grant("w", "0", 1, 10_000.0)
        return first, after_idle

    first, after_idle = run(main)
    assert first == 0.0  # a new (or restarted) bank lets no burst through
    assert after_idle == 250.0


def _hot_range_spend(container_ru: float | None) -> float:
    async def main() -> dict[str, float]:
        bank = BudgetBank(1000.0, container_ru=container_ru)
        spent: dict[str, float] = {}
        workers = [Governor(None, shared=SharedBudget(bank, f"w{i}", 1000.0, container_ru=container_ru))
                   for i in range(2)]
        for governor in workers:
            governor.share_budget(["hot", "cold"])
        async with anyio.create_task_group() as group:
            for governor in workers:  # everyone wants the hot range
                for _ in range(4):
                    group.start_soon(_spend, governor, "hot", 10.0, 10.0, spent)
        return spent

    return run(main)["hot"]


def test_each_target_range_is_held_to_its_share_across_workers() -> None:
    # The container's own RU/s unknown (or its database's): an even split, half the budget each.
    assert 4_700 <= _hot_range_spend(None) <= 5_200
    # A container of 4,000 RU/s over 2 partitions: 2,000 each, more than the whole 1,000 budget.
    assert 9_500 <= _hot_range_spend(4000.0) <= 10_300
    # 1,600 RU/s: each partition takes 800 of the 1,000.
    assert 7_600 <= _hot_range_spend(1600.0) <= 8_200


def test_the_budget_follows_real_charges_while_requests_wait_for_grants() -> None:
    """Requests settle (estimate vs real charge) while others wait for a grant; those corrections
    must not be lost. They were: an acquire held the reserve in a local across its waits and wrote
    it back, so 12 % underestimates spent 4,554 RU/s of a 4,000 budget, overestimates 3,664."""
    def rate(estimate: float) -> float:
        async def main() -> float:
            bank = BudgetBank(4000.0)
            spent = [0.0]
            workers = [Governor(None, shared=SharedBudget(bank, f"w{i}", 4000.0)) for i in range(2)]

            async def write(governor: Governor) -> None:
                while anyio.current_time() < 30.0:
                    async with governor.request("0", estimate) as ticket:
                        await anyio.sleep(0.05)
                        ticket.charge = 445.0
                    spent[0] += 445.0

            for governor in workers:
                governor.share_budget(["0"])
            async with anyio.create_task_group() as group:
                for governor in workers:
                    for _ in range(8):
                        group.start_soon(write, governor)
            return spent[0] / 30.0

        return run(main)

    # Within 6 %: the requests still in flight at the 30 s mark are counted too.
    assert 3_900 <= rate(400.0) <= 4_240  # underestimated by 10 %
    assert 3_900 <= rate(500.0) <= 4_240  # overestimated by 12 %

