from services.metrics.domain.causes import CAUSES, cause_label
from shared.events import CausedBy


def test_the_cause_is_the_kind_of_what_a_failure_traces_to_never_its_reference() -> None:
    assert cause_label(CausedBy(kind="case", ref="CASE-17")) == "case"
    assert cause_label(CausedBy(kind="demand", ref="d-42")) == "demand"
    assert cause_label(None) == "untraced"
    assert CAUSES == ("case", "demand", "untraced")
