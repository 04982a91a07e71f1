"""The redaction corpus: what must be masked, and what must be left exactly as written."""

from __future__ import annotations

import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shared.privacy import redaction
from shared.privacy.redaction import RedactionResult, Redactor

REDACTOR = Redactor()

MASKED = [
    # Test card numbers, printed the ways people type them.
    ("pay with 4111 1111 1111 1111 please", "pay with [card] please", ("card",)),
    ("card 5555-5555-5555-4444.", "card [card].", ("card",)),
    ("amex 378282246310005 expired", "amex [card] expired", ("card",)),
    ("amex 3782 822463 10005", "amex [card]", ("card",)),
    ("card4111111111111111expires", "card[card]expires", ("card",)),
    ("ref 12 4111 1111 1111 1111 exp 2026", "ref 12 [card] exp 2026", ("card",)),
    # UK phone formats.
    ("ring me on 07700 900123.", "ring me on [phone].", ("phone",)),
    ("office 020 7946 0958", "office [phone]", ("phone",)),
    ("mobile +44 7700 900123", "mobile [phone]", ("phone",)),
    ("(020) 7946-0958 any time", "[phone] any time", ("phone",)),
    ("+44 (0)20 7946 0958", "[phone]", ("phone",)),
    ("07700.900.123", "[phone]", ("phone",)),
    ("(call 07700 900123)", "(call [phone])", ("phone",)),
    # International formats.
    ("US +1 415 555 2671", "US [phone]", ("phone",)),
    ("Paris +33 1 23 45 67 89", "Paris [phone]", ("phone",)),
    ("Berlin 0049 30 123456", "Berlin [phone]", ("phone",)),
    ("US office (415) 555-2671", "US office [phone]", ("phone",)),
    ("call 415-555-2671 today", "call [phone] today", ("phone",)),
    ("on 07700 900123 2024", "on [phone] 2024", ("phone",)),
    # E-mail addresses.
    ("mail jo.bloggs+bills@mail.example.co.uk.", "mail [email].", ("email",)),
    ("From: A_B-9@sub.domain.example.org!", "From: [email]!", ("email",)),
    # NI numbers and IBANs.
    ("NI AB123456C", "NI [ni_number]", ("ni_number",)),
    ("ni: ab 12 34 56 c", "ni: [ni_number]", ("ni_number",)),
    ("IBAN GB82 WEST 1234 5698 7654 32 THEN", "IBAN [iban] THEN", ("iban",)),
    ("to DE89370400440532013000 now", "to [iban] now", ("iban",)),
    # Several kinds in one text.
    (
        "I'm jo@example.com, card 4111-1111-1111-1111, call 07700 900123 re GB82WEST12345698765432",
        "I'm [email], card [card], call [phone] re [iban]",
        ("card", "email", "iban", "phone"),
    ),
]

KEPT = [
    "reference 1234567812345678 is not a card",  # 16 digits, fails Luhn
    "on 12/03/2024 at 10:30",
    "due 2024-03-12 10:30",
    "I paid £1,234.56 and then £20",
    "order 12345 arrived",
    "meter reading 04512",
    "account 12345678, sort code 12-34-56",
    "sort 12-34-56 12345678",
    "postcode SW1A 1AA stays for analysis",
    "IBAN-like GB00 WEST 1234 5698 7654 32 fails mod-97",
    "case number 2024031210 please",
    "BG123456C is not an NI number",
    "version 1.2.3.4 of the app",
    "me @ home",
]


@pytest.mark.parametrize(("text", "expected", "kinds"), MASKED)
def test_masks_personal_data(text: str, expected: str, kinds: tuple[str, ...]) -> None:
    assert REDACTOR.redact(text) == RedactionResult(expected, kinds)


@pytest.mark.parametrize("text", KEPT)
def test_keeps_numbers_that_are_not_personal(text: str) -> None:
    assert REDACTOR.redact(text) == RedactionResult(text, ())


def test_the_kept_reference_really_fails_luhn() -> None:
    # Guards the corpus itself: change one digit of a valid card and Luhn rejects it.
    assert REDACTOR.redact("4111111111111111").text == "[card]"
    assert REDACTOR.redact("4111111111111112").text == "4111111111111112"


@pytest.mark.parametrize(("text", "expected", "kinds"), MASKED)
def test_redacting_twice_changes_nothing(text: str, expected: str, kinds: tuple[str, ...]) -> None:
    once = REDACTOR.redact(text)
    assert REDACTOR.redact(once.text) == RedactionResult(once.text, ())


def test_extra_patterns_are_masked_by_name_before_the_built_ins() -> None:
    redactor = Redactor({"customer_ref": r"CUST-\d{6,}"})
    result = redactor.redact("CUST-0770090012345 rang from 07700 900123")
    assert result == RedactionResult("[customer_ref] rang from [phone]", ("customer_ref", "phone"))


def test_whitespace_and_case_are_kept_verbatim() -> None:
    text = "  Hello\tWORLD,\n call\r\n07700 900123  now!  "
    assert REDACTOR.redact(text).text == "  Hello\tWORLD,\n call\r\n[phone]  now!  "


@given(st.text(alphabet=st.characters(exclude_categories=["Nd"], exclude_characters="@")))
def test_text_without_digits_or_at_signs_is_unchanged(text: str) -> None:
    assert REDACTOR.redact(text) == RedactionResult(text, ())


def test_reports_throughput_on_a_typical_text() -> None:
    text = (
        "Hello, I rang on 12/03/2024 about my bill of £123.45 for account 12345678 and "
        "nobody called me back on 07700 900123. This is the third time; email me at "
        "jo@example.com or I will complain again."
    )
    count = 2_000
    started = time.perf_counter()
    for _ in range(count):
        REDACTOR.redact(text)
    elapsed = time.perf_counter() - started
    print(f"\nredaction: {count / elapsed:,.0f} texts/s on a {len(text)}-char text")
    assert REDACTOR.redact(text).kinds == ("email", "phone")


# Digit groups and separators as numbers are written, phones and cards among them.
_RUN_PIECES = [
    "+44 ",
    "07700 900123",
    "0",
    "00",
    "(020) ",
    "4111 1111 1111 1111",
    "4111",
    " ",
    "-",
    ".",
    "12",
    "345",
    "6789",
    "2026-11-20",
    "415-555-2671",
    "(",
    ")",
    "9",
    "+1 415 555 2671",
    "0044 7700 900 123",
    "3782 822463 10005",
]


@given(st.lists(st.sampled_from(_RUN_PIECES), min_size=1, max_size=10).map("".join))
@settings(max_examples=2000, deadline=None)
def test_the_digit_bounds_skip_only_windows_the_detectors_refuse(text: str) -> None:
    """Cards and phones are looked for only in windows with a plausible number of digits:
    without the bounds, every run is masked the same."""
    for match in redaction._DIGIT_RUN.finditer(text):
        run = match.group()
        for accepts, digits in (
            (redaction._is_card, redaction._CARD_DIGITS),
            (redaction._is_phone, redaction._PHONE_DIGITS),
        ):
            unbounded = redaction._accepted_spans(run, accepts, (0, 10**6))
            assert redaction._accepted_spans(run, accepts, digits) == unbounded
