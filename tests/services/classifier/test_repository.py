"""The label store on SQLite and PostgreSQL: once per label id, the latest label of a demand
wins, texts remembered for a label without one and forgotten after the context window."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta, timezone
from functools import partial

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from services.classifier.db.migrate import upgrade
from services.classifier.db.repository import LabelRepository, SeenText
from shared.database.engine import create_engine
from shared.events.classification import DemandType
from tests.support.factories import demand_labelled

T0 = datetime(2026, 11, 1, 9, 0, tzinfo=UTC)


# The labels of these tests are given at T0 unless one says otherwise.
label = partial(demand_labelled, labelled_at=T0)


@pytest.fixture
async def migrated(database_url: str) -> str:
    await asyncio.to_thread(upgrade, database_url)
    return database_url


@pytest.fixture
async def labels(migrated: str) -> AsyncIterator[LabelRepository]:
    engine = create_engine(migrated)
    try:
        yield LabelRepository(engine)
    finally:
        await engine.dispose()


async def test_labels_are_stored_once_per_label_id(labels: LabelRepository) -> None:
    once = label(id="L1", demand_id="D1", purpose="moving home", text="moving")
    assert await labels.add_labels([once]) == 1
    assert await labels.add_labels([once]) == 0
    # A batch may carry a label twice (a redelivery within one poll).
    twice = [
        label(id="L2", demand_id="D2", purpose="x", text="t"),
        label(id="L2", demand_id="D2", purpose="x", text="t"),
    ]
    assert await labels.add_labels(twice) == 1
    assert await labels.count() == 2


async def test_a_label_without_text_uses_the_text_the_classifier_saw(
    labels: LabelRepository,
) -> None:
    await labels.remember_texts([SeenText("test", "D1", "I am moving next week", T0)])
    await labels.add_labels(
        [
            label(id="L1", demand_id="D1", purpose="moving home"),
            label(id="L2", demand_id="D2", purpose="smart meter"),
        ]
    )

    examples = await labels.training_examples()

    # D2's text was never seen: it cannot teach anything (yet).
    assert [(e.text, e.purpose, e.demand_type) for e in examples] == [
        ("I am moving next week", "moving home", "value")
    ]


async def test_the_latest_label_of_a_demand_wins(labels: LabelRepository) -> None:
    await labels.add_labels(
        [
            label(
                id="L2",
                demand_id="D1",
                purpose="complaint",
                labelled_at=T0 + timedelta(hours=1),
                text="t",
                demand_type=DemandType.FAILURE,
                failure_kind="repeat",
            ),
            label(id="L1", demand_id="D1", purpose="moving home", labelled_at=T0, text="t"),
        ]
    )

    [example] = await labels.training_examples()

    assert (example.purpose, example.demand_type, example.failure_kind) == (
        "complaint",
        "failure",
        "repeat",
    )


async def test_latest_is_by_the_moment_not_the_offset_and_ties_go_to_the_later_arrival(
    labels: LabelRepository,
) -> None:
    paris = timezone(timedelta(hours=2))
    await labels.add_labels(
        [
            label(id="L1", demand_id="D1", purpose="moving home", labelled_at=T0, text="t"),
            # 10:30 in Paris is 08:30 UTC: earlier than L1 although its clock reads later.
            label(
                id="L2",
                demand_id="D1",
                purpose="complaint",
                labelled_at=T0.astimezone(paris) - timedelta(minutes=30),
            ),
            label(id="L3", demand_id="D2", purpose="first", labelled_at=T0, text="u"),
        ]
    )
    await labels.add_labels(
        [label(id="L4", demand_id="D2", purpose="second", labelled_at=T0, text="u")]
    )

    examples = await labels.training_examples()

    assert sorted(str(e.purpose) for e in examples) == ["moving home", "second"]


async def test_an_unknown_label_teaches_the_purpose_only(labels: LabelRepository) -> None:
    await labels.add_labels(
        [
            label(
                id="L1",
                demand_id="D1",
                purpose="moving home",
                text="t",
                demand_type=DemandType.UNKNOWN,
            )
        ]
    )

    [example] = await labels.training_examples()

    assert (example.purpose, example.demand_type, example.failure_kind) == (
        "moving home",
        None,
        None,
    )


async def test_each_labels_reason_is_kept_and_an_audited_demand_stays_in_the_audit(
    labels: LabelRepository,
) -> None:
    await labels.add_labels(
        [
            label(id="L1", demand_id="D1", purpose="a", text="t1", reason="audit"),
            label(id="L2", demand_id="D2", purpose="b", text="t2", reason="review"),
            # Drawn into the random audit, then corrected: still one of the random sample's
            # demands, with the corrected answer.
            label(id="L3", demand_id="D3", purpose="c", text="t3", reason="audit"),
            label(
                id="L4",
                demand_id="D3",
                purpose="c",
                text="t3",
                reason="correction",
                demand_type=DemandType.FAILURE,
                failure_kind="repeat",
                labelled_at=T0 + timedelta(hours=1),
            ),
            label(id="L5", demand_id="D4", purpose="d", text="t4"),  # no reason: a correction
        ]
    )
    # The consumer's batch path (sqlite3 itself on SQLite) keeps it too.
    await labels.keep_batch(
        (), [label(id="L6", demand_id="D5", purpose="e", text="t5", reason="audit")], look_up=()
    )

    examples = await labels.training_examples()

    assert sorted((e.text, e.demand_type, e.reason) for e in examples) == [
        ("t1", "value", "audit"),
        ("t2", "value", "review"),
        ("t3", "failure", "audit"),
        ("t4", "value", "correction"),
        ("t5", "value", "audit"),
    ]


async def test_labels_survive_reopening_and_old_texts_are_forgotten(migrated: str) -> None:
    engine = create_engine(migrated)
    store = LabelRepository(engine)
    await store.remember_texts(
        [SeenText("test", "D1", "old", T0), SeenText("test", "D2", "new", T0 + timedelta(days=40))]
    )
    await store.add_labels(
        [label(id="L1", demand_id="D1", purpose="x"), label(id="L2", demand_id="D2", purpose="y")]
    )
    await engine.dispose()

    engine = create_engine(migrated)
    reopened = LabelRepository(engine)
    try:
        assert await reopened.forget_texts_before(T0 + timedelta(days=30)) == 1
        assert [e.text for e in await reopened.training_examples()] == ["new"]
        assert await reopened.count() == 2
    finally:
        await engine.dispose()


async def test_one_batch_keeps_texts_and_labels_and_purges_in_one_go(
    labels: LabelRepository,
) -> None:
    await labels.remember_texts([SeenText("test", "OLD", "forget me", T0 - timedelta(days=60))])

    added = await labels.keep(
        [SeenText("test", "D1", "seen now", T0), SeenText("test", "D1", "seen twice", T0)],
        [
            label(id="L1", demand_id="D1", purpose="moving home"),
            label(id="L2", demand_id="OLD", purpose="x"),
        ],
        forget_before=T0 - timedelta(days=30),
    )

    assert added == 2
    # The first sighting of a demand's text wins; OLD's text is gone with the purge.
    assert [(e.text, e.purpose) for e in await labels.training_examples()] == [
        ("seen now", "moving home")
    ]


async def test_a_time_at_the_edge_of_the_calendar_is_kept(labels: LabelRepository) -> None:
    # 0001-01-01T00:00+14:00 is before the first moment Python can write in UTC.
    edge = datetime(1, 1, 1, tzinfo=timezone(timedelta(hours=14)))

    at_the_edge = label(id="L1", demand_id="D1", purpose="x", labelled_at=edge, text="t")
    assert await labels.add_labels([at_the_edge]) == 1
    assert [e.purpose for e in await labels.training_examples()] == ["x"]


async def test_nul_characters_are_dropped_rather_than_refused(labels: LabelRepository) -> None:
    # PostgreSQL refuses NUL in text (SQLSTATE 22021); an event may carry one. Refused, the
    # batch would stall or the demand be dead-lettered for what is only training data.
    await labels.remember_texts([SeenText("test", "D1", "moving\x00 home", T0)])
    await labels.add_labels(
        [
            label(id="L1", demand_id="D1", purpose="moving home", labelled_by="staff\x001"),
            label(id="L2", demand_id="D2", purpose="x", text="a\x00b"),
        ]
    )

    assert sorted(str(e.text) for e in await labels.training_examples()) == [
        "ab",
        "moving home",
    ]


async def test_a_label_teaches_with_its_own_sources_demand_only(labels: LabelRepository) -> None:
    """A demand is (source, id) (issue 10, item 12): two sources used "D1"; genesys's label
    of its D1 teaches with genesys's words, never demo's, and demo's D1 keeps its own label."""
    await labels.remember_texts(
        [
            SeenText("demo", "D1", "I am moving next week", T0),
            SeenText("genesys", "D1", "my bill is wrong again", T0),
        ]
    )
    await labels.add_labels(
        [
            label(id="L1", demand_id="D1", demand_source="demo", purpose="moving home"),
            # The same label id in another source is another label.
            label(
                id="L1",
                demand_id="D1",
                demand_source="genesys",
                purpose="billing",
                demand_type=DemandType.FAILURE,
                failure_kind="not_done_right",
                labelled_at=T0 + timedelta(minutes=1),
            ),
        ]
    )
    examples = await labels.training_examples()
    assert sorted((e.text, e.purpose, e.demand_type) for e in examples) == [
        ("I am moving next week", "moving home", "value"),
        ("my bill is wrong again", "billing", "failure"),
    ]


async def test_an_old_label_without_a_source_teaches_only_when_one_demand_has_its_id(
    labels: LabelRepository,
) -> None:
    await labels.remember_texts(
        [
            SeenText("demo", "SHARED", "first words", T0),
            SeenText("genesys", "SHARED", "other words", T0),
            SeenText("demo", "ONLY", "only words", T0),
        ]
    )
    await labels.add_labels(
        [
            label(id="O1", demand_id="SHARED", demand_source=None, purpose="x"),
            label(id="O2", demand_id="ONLY", demand_source=None, purpose="y"),
        ]
    )
    examples = await labels.training_examples()
    assert [(e.text, e.purpose) for e in examples] == [("only words", "y")]


async def test_a_consumer_batch_reads_what_was_labelled_before_it_then_keeps_its_own(
    labels: LabelRepository,
) -> None:
    """keep_batch: the handler's one trip per batch (one function on SQLite's thread)."""
    paris = timezone(timedelta(hours=2))
    await labels.add_labels(
        [
            label(id="L1", demand_id="D1", purpose="moving home", labelled_at=T0),
            # Earlier than L1 (08:30 UTC) although its clock reads later: L1 is the latest.
            label(
                id="L2",
                demand_id="D1",
                purpose="complaint",
                labelled_at=T0.astimezone(paris) - timedelta(minutes=30),
            ),
            label(id="L3", demand_id="D1", demand_source="other", purpose="elsewhere"),
        ]
    )
    batch = {
        "texts": [
            SeenText("test", "D1", "I am moving", T0, "C1"),
            SeenText("test", "D2", "my bill\x00 again", T0, "C2"),
            SeenText("test", "D2", "seen twice", T0, "C2"),
        ],
        "labels": [label(id="L4", demand_id="D2", purpose="billing")],
        "look_up": [("test", "D1"), ("test", "D2"), ("test", "D3")],
    }

    found = await labels.keep_batch(**batch)  # type: ignore[arg-type]

    # D2's label is this batch's own: read before it was kept, as the handler applies it.
    assert found == {("test", "D1"): "moving home"}
    assert await labels.labelled_purposes([("test", "D2")]) == {("test", "D2"): "billing"}
    assert await labels.customers_of([("test", "D1"), ("test", "D2")]) == {
        ("test", "D1"): "C1",
        ("test", "D2"): "C2",
    }
    assert sorted((e.text, e.purpose) for e in await labels.training_examples()) == [
        ("I am moving", "moving home"),
        ("my bill again", "billing"),
    ]
    # Redelivered: nothing new, and now the batch's own label is there to read.
    assert await labels.keep_batch(**batch) == {  # type: ignore[arg-type]
        ("test", "D1"): "moving home",
        ("test", "D2"): "billing",
    }
    assert await labels.count() == 4


async def test_a_consumer_batch_purges_old_texts_and_keeps_times_at_the_calendar_edge(
    labels: LabelRepository,
) -> None:
    edge = datetime(1, 1, 1, tzinfo=timezone(timedelta(hours=14)))
    await labels.remember_texts([SeenText("test", "OLD", "forget me", T0 - timedelta(days=60))])

    await labels.keep_batch(
        [SeenText("test", "D1", "seen now", T0)],
        [
            label(id="L1", demand_id="D1", purpose="moving home", labelled_at=edge),
            label(id="L2", demand_id="OLD", purpose="x"),
        ],
        look_up=[],
        forget_before=T0 - timedelta(days=30),
    )

    assert [(e.text, e.purpose) for e in await labels.training_examples()] == [
        ("seen now", "moving home")
    ]
    # Stored as SQLAlchemy stores times: its own queries order and compare them alike.
    assert await labels.forget_texts_before(T0 + timedelta(seconds=1)) == 1


async def test_a_consumer_batch_that_fails_part_way_keeps_nothing(
    labels: LabelRepository,
) -> None:
    # The database refuses the batch's label after its texts went in: the whole batch is
    # rolled back (the handler then retries or dead-letters it), and the connection goes
    # back to the pool usable. On SQLite the commit and the rollback are the thread's own.
    async with labels.engine.begin() as connection:
        if connection.dialect.name == "sqlite":
            await connection.execute(
                text(
                    "CREATE TRIGGER refuse BEFORE INSERT ON classifier_labels"
                    " BEGIN SELECT RAISE(ABORT, 'refused'); END"
                )
            )
        else:
            await connection.execute(
                text(
                    "CREATE FUNCTION refuse() RETURNS trigger AS"
                    " $$ BEGIN RAISE EXCEPTION 'refused'; END $$ LANGUAGE plpgsql"
                )
            )
            await connection.execute(
                text(
                    "CREATE TRIGGER refuse BEFORE INSERT ON classifier_labels"
                    " FOR EACH ROW EXECUTE FUNCTION refuse()"
                )
            )
    batch = {
        "texts": [SeenText("test", "D1", "I am moving", T0, "C1")],
        "labels": [label(id="L1", demand_id="D1", purpose="moving home")],
        "look_up": [("test", "D1")],
    }

    with pytest.raises(DBAPIError):
        await labels.keep_batch(**batch)  # type: ignore[arg-type]

    assert await labels.customers_of([("test", "D1")]) == {}
    async with labels.engine.begin() as connection:
        await connection.execute(
            text(
                "DROP TRIGGER refuse"
                + ("" if connection.dialect.name == "sqlite" else " ON classifier_labels")
            )
        )
    assert await labels.keep_batch(**batch) == {}  # type: ignore[arg-type]
    assert await labels.customers_of([("test", "D1")]) == {("test", "D1"): "C1"}
    assert await labels.labelled_purposes([("test", "D1")]) == {("test", "D1"): "moving home"}


async def test_the_newest_texts_are_read_newest_first_and_bounded(
    labels: LabelRepository,
) -> None:
    # Written out of order, over two batches; two share a moment (then by source, id).
    await labels.remember_texts(
        [SeenText("web", f"D{i}", f"text {i}", T0 + timedelta(minutes=i)) for i in (3, 0, 5)]
    )
    await labels.remember_texts(
        [
            SeenText("web", "D4", "text 4", T0 + timedelta(minutes=4)),
            SeenText("phone", "D9", "text 9", T0 + timedelta(minutes=5)),
            SeenText("web", "D1", "text 1", T0 + timedelta(minutes=1)),
        ]
    )

    newest = await labels.recent_texts(4)

    assert [(t.source, t.demand_id) for t in newest] == [
        ("web", "D5"),
        ("phone", "D9"),
        ("web", "D4"),
        ("web", "D3"),
    ]
    assert newest[0].text == "text 5"
    assert newest[0].seen_at == T0 + timedelta(minutes=5)
    assert len(await labels.recent_texts(100)) == 6
    assert await labels.recent_texts(0) == []


async def test_texts_are_counted_all_or_since_a_moment(labels: LabelRepository) -> None:
    assert await labels.count_texts() == 0
    await labels.remember_texts(
        [SeenText("web", f"D{i}", "t", T0 + timedelta(minutes=i)) for i in range(5)]
    )

    assert await labels.count_texts() == 5
    assert await labels.count_texts(since=T0 + timedelta(minutes=2)) == 2  # strictly after
    # An offset is a moment like any other.
    other = timezone(timedelta(hours=2))
    assert await labels.count_texts(since=(T0 + timedelta(minutes=1)).astimezone(other)) == 3
