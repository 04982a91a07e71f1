"""Reading labelled examples from the CSV files people export."""

from __future__ import annotations

from pathlib import Path

import pytest

from services.classifier.model.examples import normalise_demand_type, read_examples_csv


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("value", "value"),
        ("Value", "value"),
        (" FAILURE ", "failure"),
        ("Value demand", "value"),
        ("failure_demand", "failure"),
        ("Failure-Demand", "failure"),
        ("failure  demand", "failure"),
        ("demand", None),
        ("unknown", None),
        ("v", None),  # never guessed
        ("", None),
        (None, None),
    ],
)
def test_demand_types_are_read_as_people_write_them(raw: str | None, expected: str | None) -> None:
    assert normalise_demand_type(raw) == expected


def test_an_untidy_export_is_read_and_what_was_skipped_is_counted(tmp_path: Path) -> None:
    path = tmp_path / "export.csv"
    path.write_text(
        "\ufeffID,Text,Customer Purpose,Demand Type,Failure-Kind,Channel\r\n"
        '1,"Where is my card? Ordered it\nthree weeks ago",Card_Arrival,Failure demand,'
        "Progress Chasing,Email\r\n"
        "2,I want to open a savings account,open account,Value demand,,Phone\r\n"
        "3,   ,open account,value,,phone\r\n"
        "4,Change my address please,change details,n/a,,web\r\n",
        encoding="utf-8",
    )
    read = read_examples_csv(path)
    assert [(e.text, e.demand_type, e.failure_kind, e.channel) for e in read.examples] == [
        ("Where is my card? Ordered it\nthree weeks ago", "failure", "progress_chasing", "email"),
        ("I want to open a savings account", "value", None, "phone"),
        ("Change my address please", None, None, "web"),
    ]
    # "Customer Purpose" is not the purpose column: only ``purpose`` is.
    assert [e.purpose for e in read.examples] == [None, None, None]
    assert read.skipped_empty_text == 1
    assert read.unlabelled_demand_type == 1
    assert read.columns == (
        "id",
        "text",
        "customer_purpose",
        "demand_type",
        "failure_kind",
        "channel",
    )


def test_a_file_without_a_text_column_names_what_it_found(tmp_path: Path) -> None:
    path = tmp_path / "export.csv"
    path.write_text("Message,Purpose\nhello,billing\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"no 'text' column \(found: message, purpose\)"):
        read_examples_csv(path)
