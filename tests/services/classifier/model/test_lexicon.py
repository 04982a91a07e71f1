"""The ``verdict`` cue group (the customer's verdict that the service failed them), and models
saved before it existed."""

from __future__ import annotations

import io

import joblib
import numpy as np
import pytest

from services.classifier.model import lexicon, store
from services.classifier.model.examples import Example
from services.classifier.model.lexicon import CUE_GROUPS, CueCounter
from services.classifier.model.text_model import Prediction, TextModel
from services.classifier.taxonomy import PurposeDefinition, Taxonomy

VERDICTS = [
    "Worst service ever",
    "this is a DISGRACE",
    "what a shambles",
    "absolute rip-off, and a ripoff last year too",
    "your app sucks",
    "fix your app!!!",
    "please just fix this",
    "get your act together",
    "fuming. never again",
    "thanks for nothing",
    "gotta love next day delivery that takes a week",
    "sort it out",
]
LOOK_ALIKES = [
    "a worsted wool jumper",
    "suckling pig on the menu",
    "prefix it with the area code",
    "the fixit app",
    "seriousness of the leak",
    "my epic failure at baking",
    "nightmares about exams",
    # Left out of the group on purpose: plain value demand in the corpus's sectors.
    "when is the rubbish collection",
    "i think i got a scam text",
    "poor signal in the kitchen",
    # Dropped: they match at least as many value rows of our data as failure rows.
    "stone chip in my windscreen, can you fix it",
    "can you do better on the price",
    "who do i talk to if i'm unhappy with the repair",
    "thank you so much for your help",
]


def _verdict(texts: list[str]) -> np.ndarray:
    counter = CueCounter()
    rows = counter.rows(texts)
    column: np.ndarray = rows[:, counter.feature_names.index("cue:verdict")]
    return column


def test_the_verdict_group_matches_its_phrases_and_not_look_alikes() -> None:
    assert (_verdict(VERDICTS) > 0).all()
    assert (_verdict(LOOK_ALIKES) == 0).all()
    both = _verdict(["absolute rip-off, and a ripoff last year too"])
    assert both[0] == np.float32(np.log1p(2))  # each phrase counted


def test_the_verdict_group_is_a_failure_cue_searched_by_key() -> None:
    counter = CueCounter()
    names = counter.feature_names
    row = counter.rows(["worst company ever"])[0]

    assert counter.group_names[-1] == "verdict"  # after the older groups: their columns stay
    assert counter._keys[counter.group_names.index("verdict")] is not None
    assert row[names.index("cue:any_failure")] > 0
    assert row[names.index("cue:request")] == 0
    # no phrase of it is already counted by another group
    others = {p for name, group in CUE_GROUPS.items() if name != "verdict" for p in group}
    assert not others & set(CUE_GROUPS["verdict"])


TEXTS = ["worst service ever, fix it", "I'd like to set up a direct debit", "still waiting"]


@pytest.fixture
def old_model(
    examples: list[Example], monkeypatch: pytest.MonkeyPatch
) -> tuple[bytes, list[Prediction]]:
    """A model trained and saved while the lexicon had no ``verdict`` group, and what it
    predicted then."""
    before = {name: group for name, group in CUE_GROUPS.items() if name != "verdict"}
    with monkeypatch.context() as patch:
        patch.setattr(lexicon, "CUE_GROUPS", before)
        taxonomy = Taxonomy(
            purposes=tuple(PurposeDefinition(slug=p) for p in {e.purpose or "" for e in examples})
        )
        model = TextModel.train(examples, taxonomy)
        assert "cue:verdict" not in model._cues.feature_names
        return store.dumps(model), model.predict_batch(TEXTS)


def test_a_model_saved_before_the_verdict_group_predicts_as_before(
    old_model: tuple[bytes, list[Prediction]],
) -> None:
    payload, expected = old_model
    assert "verdict" in CUE_GROUPS  # the lexicon has it now

    loaded = store.loads(payload, where="test")

    assert "cue:verdict" not in loaded._cues.feature_names  # its own groups, as trained
    assert loaded.predict_batch(TEXTS) == expected


def test_a_model_saved_before_search_keys_and_the_verdict_group_adopts_keys(
    old_model: tuple[bytes, list[Prediction]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The lexicon has grown since: its counter has every group of the old one, with the
    same phrases, and more; the old counter takes the keys of its own groups."""
    old = joblib.load(io.BytesIO(old_model[0]))
    keys = list(old._cues._keys)
    del old._cues.__dict__["_keys"]
    plain = old._cues.rows(TEXTS)  # keyless: every group searched in every text

    assert old._cues.adopt_keys(CueCounter())
    assert old._cues._keys == keys
    assert (old._cues.rows(TEXTS) == plain).all()
    assert not old._cues.adopt_keys(CueCounter({"repeat": ["umpteenth"]}))  # other phrases

    # A taxonomy's own group comes after the lexicon's: in the grown counter, after
    # ``verdict``; its keys are taken by name, not by position.
    before = {name: group for name, group in CUE_GROUPS.items() if name != "verdict"}
    with monkeypatch.context() as patch:
        patch.setattr(lexicon, "CUE_GROUPS", before)
        own = CueCounter({"other": ["nobody cares"]})
    own_keys = list(own._keys)
    texts = [*TEXTS, "nobody cares, worst council"]
    keyed = own.rows(texts)
    del own.__dict__["_keys"]

    assert own.adopt_keys(CueCounter({"other": ["nobody cares"]}))
    assert own._keys == own_keys
    assert (own.rows(texts) == keyed).all()
