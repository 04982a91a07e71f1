from datetime import UTC, datetime, timedelta
from pathlib import Path

from services.classifier.label_store import LabelStore, SeenText
from shared.events import DemandLabelled
from shared.events.classification import DemandType

T0 = datetime(2026, 11, 1, 9, 0, tzinfo=UTC)


def label(
    label_id: str,
    demand_id: str,
    purpose: str,
    *,
    at: datetime = T0,
    text: str | None = None,
    demand_type: DemandType = DemandType.VALUE,
) -> DemandLabelled:
    return DemandLabelled(
        id=label_id,
        demand_id=demand_id,
        demand_type=demand_type,
        failure_kind="repeat" if demand_type is DemandType.FAILURE else None,
        purpose=purpose,
        labelled_by="agent-1",
        labelled_at=at,
        text=text,
    )


def test_labels_are_stored_once_per_label_id(tmp_path: Path) -> None:
    store = LabelStore(tmp_path)

    assert store.add_labels([label("L1", "D1", "moving home", text="moving")]) == 1
    assert store.add_labels([label("L1", "D1", "moving home", text="moving")]) == 0
    assert store.count() == 1


def test_a_label_without_text_uses_the_text_the_classifier_saw(tmp_path: Path) -> None:
    store = LabelStore(tmp_path)
    store.remember_texts([SeenText("D1", "I am moving next week", T0)])
    store.add_labels([label("L1", "D1", "moving home"), label("L2", "D2", "smart meter")])

    examples = store.training_examples()

    # D2's text was never seen: it cannot teach anything (yet).
    assert [(e.text, e.purpose, e.demand_type) for e in examples] == [
        ("I am moving next week", "moving home", "value")
    ]


def test_the_latest_label_of_a_demand_wins(tmp_path: Path) -> None:
    store = LabelStore(tmp_path)
    store.add_labels(
        [
            label(
                "L2",
                "D1",
                "complaint",
                at=T0 + timedelta(hours=1),
                text="t",
                demand_type=DemandType.FAILURE,
            ),
            label("L1", "D1", "moving home", at=T0, text="t"),
        ]
    )

    [example] = store.training_examples()

    assert (example.purpose, example.demand_type, example.failure_kind) == (
        "complaint",
        "failure",
        "repeat",
    )


def test_labels_survive_reopening_and_old_texts_are_forgotten(tmp_path: Path) -> None:
    store = LabelStore(tmp_path)
    store.remember_texts(
        [SeenText("D1", "old", T0), SeenText("D2", "new", T0 + timedelta(days=40))]
    )
    store.add_labels([label("L1", "D1", "x"), label("L2", "D2", "y")])
    store.close()

    reopened = LabelStore(tmp_path)
    assert reopened.forget_texts_before(T0 + timedelta(days=30)) == 1
    assert [e.text for e in reopened.training_examples()] == ["new"]
    assert reopened.count() == 2
