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


def test_each_target_range_is_held_to_its_share_across_workers() -> None:
    async def main() -> dict[str, float]:
        bank = BudgetBank(1000.0)
        spent: dict[str, float] = {}
        workers = [Governor(None, shared=SharedBudget(bank, f"w{i}", 1000.0)) for i in range(2)]
        for governor in workers:
            governor.share_budget(["hot", "cold"])
        async with anyio.create_task_group() as group:
            for governor in workers:  # everyone wants the hot range
                for _ in range(4):
                    group.start_soon(_spend, governor, "hot", 10.0, 10.0, spent)
        return spent

    spent = run(main)
    assert 4_700 <= spent["hot"] <= 5_200  # half the budget: the hot range's share, not all of it
