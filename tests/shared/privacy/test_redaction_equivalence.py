"""The redactor gives exactly what it gave before its passes were made cheaper.

``reference_redaction`` is the redactor as it was (c55112b); every text here, written or
generated, must come out of both with the same text and the same kinds.
"""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shared.privacy import redaction
from shared.privacy.redaction import Redactor
from tests.shared.privacy import reference_redaction
from tests.shared.privacy.test_redaction import KEPT, MASKED

NEW = Redactor()
OLD = reference_redaction.Redactor()

# Phone numbers as several countries print them, cards of several schemes, IBANs of
# several countries, National Insurance numbers (allocated and not), e-mail addresses, and
# the numbers a demand holds that are none of those.
PIECES = [
    # UK
    "07700 900123",
    "07700900123",
    "+44 7700 900123",
    "+44 (0)20 7946 0958",
    "(020) 7946-0958",
    "020 7946 0958",
    "0044 20 7946 0958",
    "01632 960 001",
    "0800 123 4567",
    # Ireland, France, Germany, Spain, Italy, Netherlands
    "+353 1 234 5678",
    "01 234 5678",
    "+33 1 23 45 67 89",
    "01 23 45 67 89",
    "0033 6 12 34 56 78",
    "+49 30 123456",
    "030 1234567",
    "0049 (0)30 123456",
    "+34 912 345 678",
    "+39 06 1234 5678",
    "+31 20 123 4567",
    "020-1234567",
    # North America
    "415-555-2671",
    "(415) 555-2671",
    "+1 415 555 2671",
    "415.555.2671",
    "123 456 7890",
    "212 555 0100",
    "800-555-0199",
    "1-800-555-0199",
    # Australia, India, Japan, Brazil
    "+61 2 9876 5432",
    "(02) 9876 5432",
    "+91 98765 43210",
    "+81 3-1234-5678",
    "+55 11 91234-5678",
    # Cards: Visa, Mastercard, Amex, Diners, Maestro, Discover; valid and not
    "4111 1111 1111 1111",
    "4111-1111-1111-1111",
    "4111111111111111",
    "4111111111111112",
    "5555 5555 5555 4444",
    "3782 822463 10005",
    "378282246310005",
    "3056 930902 5904",
    "6759 6498 2643 8453 001",
    "6011 1111 1111 1117",
    "4222222222222",  # 13 digits, the fewest a card has
    "0111 1111 1111 1111",
    # IBANs, valid and not, compact and in fours
    "GB82 WEST 1234 5698 7654 32",
    "GB82WEST12345698765432",
    "DE89370400440532013000",
    "DE89 3704 0044 0532 0130 00",
    "FR14 2004 1010 0505 0001 3M02 606",
    "NL91 ABNA 0417 1643 00",
    "ES91 2100 0418 4502 0005 1332",
    "IT60 X054 2811 1010 0000 0123 456",
    "GB00 WEST 1234 5698 7654 32",
    # National Insurance numbers
    "AB123456C",
    "AB 12 34 56 C",
    "ab 12 34 56 c",
    "QQ123456A",
    "BG123456C",
    "GB 12 34 56 A",
    "TN123456D",
    "A\u212a 12 34 56 C",  # KELVIN SIGN as the second letter: a "K" when case is ignored
    "A\u017f123456C",  # LATIN SMALL LETTER LONG S: an "s" when case is ignored
    # E-mail addresses, and what is not one
    "jo@example.com",
    "jo.bloggs+bills@mail.example.co.uk",
    "A_B-9@sub.domain.example.org",
    "x@y",
    "me @ home",
    "a@b.co.uk@c.com",
    "a@b.co.x!y@c.com",
    # Numbers that are none of those
    "12/03/2024",
    "2024-03-12",
    "10:30",
    "£1,234.56",
    "order 12345",
    "12345678",
    "12-34-56",
    "1.2.3.4",
    "SW1A 1AA",
    "2024031210",
    "42",
    "0",
    "00",
    "+",
    "(",
    ")",
    "-",
    ".",
    # Arabic-Indic digits ("07700 900123"): \d matches them.
    "\u0660\u0667\u0667\u0660\u0660 \u0669\u0660\u0660\u0661\u0662\u0663",
    "\u212a",  # KELVIN SIGN: matches "k" when case is ignored
]
GLUE = [" ", "  ", "", "\n", ", ", ".", "-", "(", ")", "+", " ref ", " call ", "x", "Z", "é"]
WORDS = [
    "Where is my engineer?",
    "I was told Tuesday.",
    "Call me on",
    "or",
    "my boiler is broken",
    "THEN",
    "IBAN",
    "NI",
    "",
]


def generated_texts(count: int, seed: int) -> list[str]:
    chooser = random.Random(seed)
    texts = []
    for _ in range(count):
        parts = []
        for _ in range(chooser.randint(1, 6)):
            parts.append(chooser.choice(PIECES if chooser.random() < 0.6 else WORDS))
            parts.append(chooser.choice(GLUE))
        texts.append("".join(parts))
    return texts


WRITTEN = (
    [text for text, _, _ in MASKED]
    + KEPT
    + PIECES
    + [
        "",
        "no digits or at signs at all",
        "Hello, I rang on 12/03/2024 about my bill of £123.45 for account 12345678 and nobody "
        "called me back on 07700 900123. This is the third time; email me at jo@example.com.",
        "5+07700900123",
        "1 ((07700 900123",
        "1    (07700 900123",
        "call 07700 900123AB123456C",
        "CUST-0770090012345 rang from 07700 900123",
        # A run of eight or more digits and an NI number after it: the NI search is skipped
        # only when every digit is in one such run (e7aa2df; review of round seventeen).
        "AB 12 34 56 78 C x AB 12 34 56 C",
        "4111 1111 1111 1111 ab 123456 c",
    ]
)


@pytest.mark.parametrize("text", WRITTEN)
def test_written_texts_are_redacted_as_before(text: str) -> None:
    assert NEW.redact(text) == _old(text)


def test_generated_texts_are_redacted_as_before() -> None:
    texts = generated_texts(4000, seed=14)
    differing = [text for text in texts if NEW.redact(text) != _old(text)]
    assert differing == []
    # The corpus exercises every detector, and texts they leave alone.
    kinds = {kind for text in texts for kind in NEW.redact(text).kinds}
    assert kinds == {"email", "phone", "card", "iban", "ni_number"}
    assert any(not NEW.redact(text).kinds for text in texts)


_CHARACTERS = st.sampled_from(list("0123456789 .()-+@ABCGNWZabkxé\n\u0663\u212a\u017f"))


@given(st.lists(st.one_of(_CHARACTERS, st.sampled_from(PIECES)), max_size=30).map("".join))
@settings(max_examples=1500, deadline=None)
def test_any_text_is_redacted_as_before(text: str) -> None:
    assert NEW.redact(text) == _old(text)


def test_extra_patterns_are_applied_as_before() -> None:
    patterns = {"customer_ref": r"CUST-\d{6,}", "case": r"\bCASE\d+"}
    new, old = Redactor(patterns), reference_redaction.Redactor(patterns)
    for text in [*generated_texts(300, seed=5), "CUST-0770090012345 CASE12 07700 900123"]:
        result = old.redact(text)
        assert new.redact(text) == redaction.RedactionResult(result.text, result.kinds)


def test_runs_of_enough_digits_are_the_digit_runs_holding_them() -> None:
    """The card and phone passes look only at runs with enough digits; those must be
    exactly the old run pattern's runs with that many digits, from anywhere in a text."""
    chooser = random.Random(3)
    alphabet = "0123456789 .()-+a@\n"
    for fewest, runs in ((8, redaction._PHONE_RUN), (13, redaction._CARD_RUN)):
        for _ in range(5000):
            text = "".join(chooser.choice(alphabet) for _ in range(chooser.randint(0, 40)))
            expected = [
                match.span()
                for match in redaction._DIGIT_RUN.finditer(text)
                if sum(character.isdigit() for character in match.group()) >= fewest
            ]
            assert [match.span() for match in runs.finditer(text)] == expected, text


def _old(text: str) -> redaction.RedactionResult:
    result = OLD.redact(text)
    return redaction.RedactionResult(result.text, result.kinds)


_ASCII_CHARACTERS = st.sampled_from(list("0123456789 .()-+@ABCGNSWZabksx\n"))


@given(st.lists(st.one_of(_ASCII_CHARACTERS, st.sampled_from(PIECES)), max_size=30).map("".join))
@settings(max_examples=1500, deadline=None)
def test_the_ascii_twins_find_what_the_patterns_find_in_ascii_text(text: str) -> None:
    """An ASCII text is searched with the patterns' re.ASCII twins: every search, match
    and split must be the same as the pattern's own (a non-ASCII piece is left out)."""
    if not text.isascii():
        return
    for written, twin in zip(redaction._UNICODE_PATTERNS, redaction._ASCII_PATTERNS, strict=True):
        assert [m.span() for m in twin.finditer(text)] == [m.span() for m in written.finditer(text)]
        assert twin.split(text) == written.split(text)
        for start in range(len(text)):
            found, expected = twin.search(text, start), written.search(text, start)
            assert (found and found.span()) == (expected and expected.span())


_PHONE_RUN_PIECES = ["0", "00", "07700", "900123", "+", "44", "1", "415", "555", "2671", "9"]
_PHONE_RUN_GLUE = [" ", "-", "  ", ".", "(", ")", ") ", " - ", ""]


@given(
    st.lists(
        st.tuples(st.sampled_from(_PHONE_RUN_PIECES), st.sampled_from(_PHONE_RUN_GLUE)),
        min_size=1,
        max_size=8,
    ).map(lambda pairs: "".join(piece + glue for piece, glue in pairs))
)
@settings(max_examples=3000, deadline=None)
def test_a_run_taken_whole_as_a_phone_is_what_its_windows_give(text: str) -> None:
    """_is_whole_phone says "the whole run" only where _accepted_spans says so."""
    for match in redaction._PHONE_RUN.finditer(text):
        run = match.group()
        if redaction._is_whole_phone(run):
            spans = redaction._accepted_spans(run, redaction._is_phone, redaction._PHONE_DIGITS)
            assert spans == [(0, len(run))], run


def _demand_like_texts(count: int, seed: int) -> list[str]:
    """Longer texts, as demands are written: sentences with numbers, addresses and ids in
    them, in ASCII mostly, some with accented letters or non-ASCII digits."""
    chooser = random.Random(seed)
    texts = []
    for _ in range(count):
        parts = []
        for _ in range(chooser.randint(1, 12)):
            roll = chooser.random()
            if roll < 0.45:
                parts.append(chooser.choice(WORDS))
            elif roll < 0.9:
                parts.append(chooser.choice(PIECES))
            else:
                parts.append(chooser.choice(["é", "\u0663", "\u212a", "ß", "£", "€", "\u0660"]))
            parts.append(chooser.choice(GLUE))
        texts.append("".join(parts))
    return texts


def test_demand_like_texts_are_redacted_as_before() -> None:
    texts = _demand_like_texts(20_000, seed=27)
    differing = [text for text in texts if NEW.redact(text) != _old(text)]
    assert differing == []
    assert sum(text.isascii() for text in texts) > 5_000
    assert sum(not text.isascii() for text in texts) > 5_000
