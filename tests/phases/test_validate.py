"""asyncmig validate against the emulator through the real SDK.

A correctly migrated layout (built in-process by :mod:`tests.phases.migrated`, independent of the
migrate phase) must pass; each kind of damage the original validator could not see (it counted and sampled) must
fail, naming the container and the document in both the exception and the JSON report.
"""

from __future__ import annotations

import json
import math
import random
import tracemalloc
from pathlib import Path
from typing import Any

import pytest
from azure.cosmos import PartitionKey
from azure.cosmos.aio import CosmosClient

from asyncmig.core.engine.deadletter import DeadLetterFile
from asyncmig.core.engine.transform import strip_system
from asyncmig.errors import ValidationFailed
from asyncmig.phases.context import PhaseContext, PhaseOptions
from asyncmig.phases.state import MigrationState
from asyncmig.phases.validate import _Expectations, validate
from asyncmig.phases.validation_report import MappingCheck, ValidationMismatch
from asyncmig.vimarsh import plan, transforms
from tests.conftest import Cosmos
from tests.phases.migrated import DIMENSIONS, MigratedLayout, context, first_with


def _row(report: dict[str, Any], container: str) -> dict[str, Any]:
    return next(row for row in report["containers"] if row["container"] == container)


async def _fails(ctx: PhaseContext, container: str, *needles: str) -> tuple[dict[str, Any], str]:
    """Run validate expecting failure with ``container`` first; returns the JSON report and message."""
    with pytest.raises(ValidationFailed) as caught:
        await validate(ctx)
    message = str(caught.value)
    assert caught.value.exit_code == 8
    assert message.startswith(f"validation failed: {container}: "), message
    for needle in needles:
        assert needle in message, (needle, message)
    report = json.loads(ctx.workdir.report("validate").read_text())  # written before raising
    assert report["ok"] is False
    assert report["failures"][0]["container"] == container
    assert isinstance(caught.value, ValidationMismatch) and caught.value.report.table().startswith(
        f"Validation of {ctx.database_name}: FAILED"
    )
    return report, message


async def test_correct_layout_validates(ctx: PhaseContext, layout: MigratedLayout) -> None:
    figures = layout.data.figures
    report = await validate(ctx)

    assert report.ok
    rows = {row.container: row for row in report.containers}
    assert list(rows) == [spec.name for spec in plan.VALIDATED_CONTAINERS]
    assert all(row.settings_ok for row in rows.values())
    counts = {name: (row.expected, row.actual) for name, row in rows.items() if row.expected or row.actual}
    assert counts == {
        plan.USERS: (figures.users, figures.users),
        plan.USER_SESSIONS: (figures.sessions, figures.sessions),
        plan.USER_INTERACTIONS: (figures.interactions, figures.interactions),
        plan.PERSONALITIES: (figures.personalities, figures.personalities),
        plan.PERSONALITY_VECTORS: (figures.vectors, figures.vectors),
    }
    assert figures.personalities == 13  # as generated: the 13 figures after slugging
    assert report.embeddings.dimensions == DIMENSIONS and report.embeddings.dimensions_from == "state"
    assert report.embeddings.without_embedding == figures.vectors_without_embedding > 0
    mappings = {m.source: m for m in report.mappings}
    assert mappings[plan.SOURCE_USERS].read_from == "backup backup_20250805_120000/users.jsonl.gz"
    assert mappings[plan.SOURCE_ACTIVITY].routed == {plan.USER_SESSIONS: 18, plan.USER_INTERACTIONS: 103}
    assert [(f.figure, f.seed, f.source, f.target) for f in report.figures] == [
        ("vectors", 6514, figures.vectors, figures.vectors),
        ("users", 18, figures.users, figures.users),
        ("activity", 121, figures.activity, figures.activity),
        ("personalities", 13, figures.personalities, figures.personalities),
    ]
    result = report.phase_result()
    assert (result.phase, result.status, result.documents) == ("validate", "done", report.documents)
    assert result.ru == report.ru > 0 and report.to_json()["ru"] == round(report.ru, 2)  # reads are paid for
    assert result.details == report.to_json()
    text = report.table()
    assert text.startswith(f"Validation of {ctx.database_name}: OK") and "6,514" in text
    saved = json.loads(ctx.workdir.report("validate").read_text())
    assert saved["ok"] is True and _row(saved, plan.PERSONALITY_VECTORS)["actual"] == figures.vectors


async def test_without_backup_or_recorded_settings_users_is_checked_as_a_fixed_point(
    ctx: PhaseContext, layout: MigratedLayout
) -> None:
    ctx.state = MigrationState(host=ctx.state.host, database=ctx.state.database)
    report = await validate(ctx)

    assert report.ok
    assert next(m for m in report.mappings if m.source == plan.SOURCE_USERS).read_from == "container (fixed point)"
    assert any("fixed point" in note for note in report.notes)
    assert any("without created_at/updated_at" in note for note in report.notes)
    assert (report.embeddings.dimensions, report.embeddings.dimensions_from) == (DIMENSIONS, "data")


async def test_one_ulp_in_one_embedding_fails(ctx: PhaseContext, layout: MigratedLayout) -> None:
    document = first_with(layout.targets[plan.PERSONALITY_VECTORS], "embedding")
    embedding = list(document["embedding"])
    embedding[5] = math.nextafter(embedding[5], math.inf)
    await layout.database.get_container_client(plan.PERSONALITY_VECTORS).upsert_item(
        {**document, "embedding": embedding}
    )

    report, message = await _fails(ctx, plan.PERSONALITY_VECTORS, document["id"], "differing 1")
    row = _row(report, plan.PERSONALITY_VECTORS)
    assert row["differing"] == {"count": 1, "first": [document["id"]]}
    assert row["missing"]["count"] == row["extra"]["count"] == 0
    assert report["embeddings"]["wrong_dimension"]["count"] == 0  # same size: only the digest sees it
    assert [f["container"] for f in report["failures"]] == [plan.PERSONALITY_VECTORS]


async def test_missing_target_document_fails(ctx: PhaseContext, layout: MigratedLayout) -> None:
    document = first_with(layout.targets[plan.USER_INTERACTIONS], "user_query")
    await layout.database.get_container_client(plan.USER_INTERACTIONS).delete_item(
        document["id"], partition_key=document["user_id"]
    )

    report, _ = await _fails(ctx, plan.USER_INTERACTIONS, f"missing 1 ({document['id']})")
    row = _row(report, plan.USER_INTERACTIONS)
    assert (row["expected"], row["actual"], row["missing"]["first"]) == (103, 102, [document["id"]])
    activity = next(m for m in report["mappings"] if m["source"] == plan.SOURCE_ACTIVITY)
    assert (activity["source_count"], activity["target_count"], activity["ok"]) == (121, 120, False)


async def test_extra_target_document_fails(ctx: PhaseContext, layout: MigratedLayout) -> None:
    session = layout.targets[plan.USER_SESSIONS][0]
    await layout.database.get_container_client(plan.USER_SESSIONS).upsert_item(
        {**session, "id": "session-nobody-migrated"}
    )

    report, _ = await _fails(ctx, plan.USER_SESSIONS, "extra 1 (session-nobody-migrated)")
    assert _row(report, plan.USER_SESSIONS)["extra"]["first"] == ["session-nobody-migrated"]


async def test_user_changed_since_the_backup_fails(ctx: PhaseContext, layout: MigratedLayout) -> None:
    user = layout.targets[plan.USERS][0]
    await layout.database.get_container_client(plan.USERS).upsert_item({**user, "email": "changed@example.com"})

    report, _ = await _fails(ctx, plan.USERS, f"differing 1 ({user['id']})")
    assert _row(report, plan.USERS)["differing"]["first"] == [user["id"]]


async def test_container_with_the_wrong_partition_key_fails(ctx: PhaseContext, layout: MigratedLayout) -> None:
    await layout.database.delete_container(plan.USER_SESSIONS)
    recreated = await layout.database.create_container(
        plan.USER_SESSIONS, PartitionKey("/id"), default_ttl=7_776_000
    )
    for document in layout.targets[plan.USER_SESSIONS]:
        await recreated.upsert_item(strip_system(document))

    report, _ = await _fails(
        ctx, plan.USER_SESSIONS, "partition key is Hash ['/id'], expected Hash ['/user_id'] (critical"
    )
    row = _row(report, plan.USER_SESSIONS)
    assert row["settings_ok"] is False and row["critical_differences"] == row["differences"]
    assert row["missing"]["count"] == row["extra"]["count"] == row["differing"]["count"] == 0  # data intact


async def test_container_with_the_wrong_ttl_fails(ctx: PhaseContext, layout: MigratedLayout) -> None:
    await layout.database.replace_container(
        plan.USER_INTERACTIONS, partition_key=PartitionKey("/user_id", kind="Hash", version=2), default_ttl=60
    )

    report, _ = await _fails(ctx, plan.USER_INTERACTIONS, "defaultTtl is 60, expected 15552000")
    row = _row(report, plan.USER_INTERACTIONS)
    assert row["differences"] == ["defaultTtl is 60, expected 15552000"]
    assert row["critical_differences"] == []  # correctable in place, but still a failure


async def test_missing_container_fails(ctx: PhaseContext, layout: MigratedLayout) -> None:
    await layout.database.delete_container(plan.DAILY_METRICS)

    report, _ = await _fails(ctx, plan.DAILY_METRICS, "container does not exist")
    assert _row(report, plan.DAILY_METRICS)["exists"] is False


async def test_personality_with_a_wrong_vector_count_fails(ctx: PhaseContext, layout: MigratedLayout) -> None:
    krishna = next(p for p in layout.targets[plan.PERSONALITIES] if p["id"] == "krishna")
    wrong = krishna["vector_count"] + 1
    await layout.database.get_container_client(plan.PERSONALITIES).upsert_item({**krishna, "vector_count": wrong})

    report, _ = await _fails(
        ctx, plan.PERSONALITIES, "differing 1 (krishna)",
        f"krishna: vector_count is {wrong}, expected {krishna['vector_count']}",
    )
    assert _row(report, plan.PERSONALITIES)["differing"]["first"] == ["krishna"]


async def test_rejected_source_document_must_be_dead_lettered(ctx: PhaseContext, layout: MigratedLayout) -> None:
    activity = layout.database.get_container_client(plan.SOURCE_ACTIVITY)
    orphan = await activity.upsert_item(
        {"id": "orphan-activity", "partition_key": "nobody", "document_type": "interaction", "timestamp": "x"}
    )

    await _fails(ctx, plan.SOURCE_ACTIVITY, "1 (orphan-activity) rejected", "not in the dead-letter file")

    with DeadLetterFile(ctx.workdir.dead_letter("migrate", plan.SOURCE_ACTIVITY)) as dead_letters:
        dead_letters.add(dict(orphan), container=plan.SOURCE_ACTIVITY, range_key=None, partition_key=["nobody"],
                         reason="user_activity document has no user_id")
    _, message = await _fails(ctx, plan.SOURCE_ACTIVITY, "1 (orphan-activity) rejected", "--allow-dead-letters")
    assert "not in the dead-letter file" not in message

    ctx.options = PhaseOptions(allow_dead_letters=True)
    report = await validate(ctx)  # accepted knowingly, and still reported
    mapping = next(m for m in report.mappings if m.source == plan.SOURCE_ACTIVITY)
    assert (mapping.source_count, mapping.rejected.first, mapping.dead_lettered) == (122, ["orphan-activity"], 1)


def test_expectations_keep_digests_not_documents() -> None:
    """The memory bound: per expected document a key and a digest remain, not its ~16 KB body."""
    rng = random.Random(3)
    expectations = _Expectations()
    check = MappingCheck(plan.SOURCE_VECTORS, "container", (plan.PERSONALITY_VECTORS,), "dead.jsonl", False)
    count = 3000
    tracemalloc.start()
    try:
        for i in range(count):
            expectations.expect(plan.PERSONALITY_VECTORS, {
                "id": f"krishna_bg__2_14_complete_{i:06d}", "partition_key": "krishna::bhagavad_gita",
                "personality_id": "krishna", "source": "Bhagavad Gita", "embedding": [rng.random() for _ in range(768)],
            }, check)
        retained = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    assert check.routed == {plan.PERSONALITY_VECTORS: count}
    assert retained / count < 600, retained / count


async def _legacy_sized_vector(layout: MigratedLayout) -> str:
    """Give one source vector a legacy 384-number embedding and migrate it faithfully (source and
    target agree): the data set's history, not a migration fault. Returns its target id."""
    from tests.phases.migrated import read_all

    source = layout.database.get_container_client(plan.SOURCE_VECTORS)
    document = strip_system(first_with(await read_all(source), "embedding"))
    document["embedding"] = [round(0.001 * i, 3) for i in range(384)]
    stored = await source.upsert_item(document)  # as the migration reads it (with _ts and friends)
    [(target, migrated)] = transforms.VECTORS.apply(dict(stored))
    await layout.database.get_container_client(target).upsert_item(migrated)
    return str(migrated["id"])


async def test_embeddings_of_another_dimension_are_a_finding_not_a_failure(
    cosmos: Cosmos, client: CosmosClient, ctx: PhaseContext, layout: MigratedLayout, tmp_path: Path
) -> None:
    legacy_id = await _legacy_sized_vector(layout)

    report = await validate(ctx)  # exit 0: the migration copied what the source holds
    assert report.ok and report.embeddings.wrong_dimension.first == [legacy_id]
    [finding] = report.findings()
    assert f"1 ({legacy_id})" in finding and "384" not in finding.split("(")[0]
    assert "re-embed" in finding and str(DIMENSIONS) in finding
    assert report.to_json()["findings"] == [finding] and "findings:" in report.table()

    strict = context(client, cosmos.connection_string, layout, tmp_path, options=PhaseOptions(strict=True))
    with pytest.raises(ValidationMismatch) as caught:
        await validate(strict)
    assert caught.value.exit_code == 8 and legacy_id in str(caught.value) and "re-embed" in str(caught.value)


async def test_an_embedding_that_is_not_a_vector_still_fails(ctx: PhaseContext, layout: MigratedLayout) -> None:
    document = first_with(layout.targets[plan.PERSONALITY_VECTORS], "embedding")
    await layout.database.get_container_client(plan.PERSONALITY_VECTORS).upsert_item(
        {**document, "embedding": ["a"] * DIMENSIONS}
    )
    report, _ = await _fails(ctx, plan.PERSONALITY_VECTORS, document["id"])
    assert report["embeddings"]["malformed"]["first"] == [document["id"]]


@pytest.mark.parametrize("command", ["validate", "run"])
def test_strict_is_an_option_of_validate_and_run(command: str) -> None:
    from asyncmig.cli import build_parser, phase_options

    parser = build_parser()
    assert phase_options(parser.parse_args([command, "--strict"])).strict is True
    assert phase_options(parser.parse_args([command])).strict is False
