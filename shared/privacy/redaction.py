"""Masks personal data in people's words before anything leaves intake or the metrics API.

What is masked, in this order (the first detector to claim some text wins, so a card
number is never half-eaten as a phone number and an e-mail's digits never become a phone):

1. configured extra patterns (an organisation's own formats are the most specific),
2. e-mail addresses,
3. IBANs (mod-97 checked; they hold card-length digit runs),
4. payment cards (13-19 digits laid out as cards print them, Luhn checked),
5. UK National Insurance numbers,
6. phone numbers (see ``_is_phone`` for the heuristic).

UK postcodes are deliberately kept: on their own they name a street, not a person, and
where demand comes from is central to service analysis (a failure cluster in one area).

Every mask is a ``[kind]`` token with no digits and no ``@``, so redacting redacted text
changes nothing. Everything else in the text is kept verbatim.
"""

from __future__ import annotations

import re
import string
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from functools import lru_cache
from itertools import accumulate
from types import MappingProxyType
from typing import NamedTuple

import phonenumbers

# Every pattern below is written so that the regex engine can skip ahead to the first
# character a match can start with (a character class first, lookbehinds after it): a
# leading lookbehind or ``\b`` makes it try every position of the text, which was most of
# a redaction's cost (with the pre-checks below: 25 -> 11 µs CPU on the bench's text,
# measured). Each one matches exactly what its plainer form matched;
# tests/shared/privacy/test_redaction_equivalence.py holds the redactor to the one before
# this rewrite on generated and written texts.

# The local part is possessive: the character after a shorter local part is one of its
# own, never "@", so giving characters back could never find a match.
_LOCAL_PART = string.ascii_letters + string.digits + ".!#$%&'*+/=?^_`{|}~-"
_EMAIL = re.compile(
    f"[{re.escape(_LOCAL_PART)}]++"
    r"@[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)+"
)
# Country code, check digits, then up to 30 alphanumerics, printed compact or in fours.
# ("\b" before the country code, as a lookbehind after its first letter.)
_IBAN = re.compile(r"[A-Z](?<!\w[A-Z])[A-Z]\d{2}(?: ?[A-Z0-9]{1,4}){3,8}\b")
# Prefixes D, F, I, Q, U, V are never issued; O is never second; BG, GB, NK, KN, TN, NT
# and ZZ are not allocated. Often written in pairs: "AB 12 34 56 C".
_NI_NUMBER = re.compile(
    r"\b(?!BG|GB|NK|KN|TN|NT|ZZ)[A-CEGHJ-PR-TW-Z][A-CEGHJ-NPR-TW-Z]"
    r" ?\d{2} ?\d{2} ?\d{2} ?[A-D]\b",
    re.IGNORECASE,
)
# What every National Insurance number holds: its digits, after its second letter (any
# that _NI_NUMBER's class takes when case is ignored: ASCII, the long s and the Kelvin
# sign) and an optional space. Digits first, so the search skips the words between them;
# then a one-character look back (a letter or a space), which the two after it imply: a
# digit within a number (after another digit, most of them) fails there at once, before
# its pair and the two lookbehinds are tried (on the bench's text from its first digit,
# 0.76-0.82 -> 0.62 µs, measured).
_NI_LETTER = "[A-Za-z\u017f\u212a]"
_NI_CANDIDATE = re.compile(
    rf"\d(?<=[A-Za-z\u017f\u212a ]\d)\d(?:(?<={_NI_LETTER}\d\d)|(?<={_NI_LETTER} \d\d))"
    r" ?\d\d ?\d\d"
)
# A run of digit groups joined by short separators, optionally led by "+" or "(" (one not
# preceded by a digit). Cards and phones are both found inside such runs, on group
# boundaries.
_DIGIT_RUN = re.compile(r"(?<!\d)[+(]?\d+(?:[ .()\-]{1,3}\d+)*")
_DIGIT_GROUP_SPLIT = re.compile(r"(\d+)")
_DIGIT = re.compile(r"\d")
_RUN_SEPARATOR = "[ .()\\-]"


def _runs_of_at_least(digits: int) -> re.Pattern[str]:
    """The runs ``_DIGIT_RUN`` finds that hold at least ``digits`` digits, and only those.

    A run's consecutive digits are 0 (within a group) to 3 (between groups) separators
    apart, so the lookaheads count digits across groups. The first character ("+", "(" or
    a digit) is matched before the lookbehind that says no digit precedes it. A run too
    short is never matched from any of its positions: each suffix of it is shorter still.
    """
    rest = digits - 1
    return re.compile(
        r"[+(\d](?<!\d.)"
        rf"(?:(?<=\d)(?=(?:{_RUN_SEPARATOR}{{0,3}}+\d){{{rest}}})\d*"
        rf"|(?=\d(?:{_RUN_SEPARATOR}{{0,3}}+\d){{{rest}}})\d+)"
        rf"(?:{_RUN_SEPARATOR}{{1,3}}\d+)*"
    )


# How card schemes print their numbers: in fours (Visa, Mastercard, 19-digit Maestro),
# 4-6-5 (Amex) or 4-6-4 (Diners). Unbroken numbers are accepted whatever their length.
_CARD_LAYOUTS = ((4, 6, 5), (4, 6, 4))
# The fewest and most digits a window can hold to pass _is_card and _is_phone ("00" and up
# to 15 digits for a phone): a window outside them is never looked at, and a run holding
# fewer than the fewest is never matched.
_CARD_DIGITS = (13, 19)
_PHONE_DIGITS = (8, 17)
_CARD_RUN = _runs_of_at_least(_CARD_DIGITS[0])
_PHONE_RUN = _runs_of_at_least(_PHONE_DIGITS[0])


class _Patterns(NamedTuple):
    """The patterns that look for digits, as one set."""

    digit: re.Pattern[str]
    iban: re.Pattern[str]
    ni_number: re.Pattern[str]
    ni_candidate: re.Pattern[str]
    phone_run: re.Pattern[str]
    card_run: re.Pattern[str]
    digit_group_split: re.Pattern[str]


def ascii_twin(pattern: re.Pattern[str]) -> re.Pattern[str]:
    """``pattern`` compiled with re.ASCII: on a text of ASCII characters only, it matches
    exactly what ``pattern`` matches. The flag changes only what non-ASCII characters are
    (``\\d``, ``\\w`` and ``\\b`` take ASCII ones only; ignoring case folds ASCII letters
    only, so "K" no longer matches the Kelvin sign), and such a text holds none; the
    patterns' own non-ASCII characters (the NI letters' long s and Kelvin sign) are in
    classes matched as written, never folded. Each \\d is then a table look-up, not a
    Unicode database call (the bench's text: 77.4k -> 72.7k instructions a redaction,
    callgrind)."""
    return re.compile(pattern.pattern, (pattern.flags & ~re.UNICODE) | re.ASCII)


# As written (any text), and their ASCII twins for texts that are ASCII (``str.isascii``
# is a flag the string carries: free to ask).
_UNICODE_PATTERNS = _Patterns(
    _DIGIT, _IBAN, _NI_NUMBER, _NI_CANDIDATE, _PHONE_RUN, _CARD_RUN, _DIGIT_GROUP_SPLIT
)
_ASCII_PATTERNS = _Patterns(*map(ascii_twin, _UNICODE_PATTERNS))


@dataclass(frozen=True)
class RedactionResult:
    text: str
    kinds: tuple[str, ...]


class _Window(NamedTuple):
    """Digit groups ``first..last`` of one run, with what precedes the first group."""

    digits: str
    group_lengths: tuple[int, ...]
    separators: tuple[str, ...]
    lead: str  # "+", "(" (a bracketed area code) or ""


_WindowTest = Callable[[_Window], bool]


class Redactor:
    """Masks personal data; build once and reuse (the patterns are compiled once)."""

    def __init__(self, extra_patterns: Mapping[str, str] = MappingProxyType({})) -> None:
        self._extra = tuple((name, re.compile(pattern)) for name, pattern in extra_patterns.items())

    def redact(self, text: str) -> RedactionResult:
        kinds: set[str] = set()
        for name, pattern in self._extra:
            text = _mask(pattern, text, name, kinds)
        at = text.find("@")
        if at >= 0:
            text = _mask_emails(text, at, kinds)
        # Masks are ASCII, so a text that is ASCII here stays so.
        digit_at, iban, ni_number, ni_candidate, phone_run, card_run, split = (
            _ASCII_PATTERNS if text.isascii() else _UNICODE_PATTERNS
        )
        digit = digit_at.search(text)
        if digit is None:
            # Every remaining detector needs a digit: the common case of plain words is cheap.
            return RedactionResult(text, _sorted(kinds))
        # No match of theirs starts more than two characters before the first digit (an
        # IBAN's check digits follow its two letters, a run's first digit its one-character
        # lead, an NI candidate starts with digits), so they search from there, not from the
        # start of the text (their lookbehinds still see what precedes). Masking only ever
        # removes digits, so the first digit never moves closer to the start. On the bench's
        # text (the digits near its end) 9.8 -> 8.4 µs, measured.
        first = digit.start()
        start = max(0, first - 2)
        if iban.search(text, start) is not None:  # seldom: no call for the common case
            text = _mask_ibans(text, kinds, start, iban)
            first = -1  # the text may have moved: not used below
        # The runs one search at a time, each from where the last ended (what finditer
        # does; a run holds eight digits, so none is empty): a text holds one or two, and
        # finditer's scanner, its iterator and the list cost more than the searches (the
        # bench's text: 11k -> 6k instructions, callgrind). Noted on the way: whether one
        # is long enough to hold a card's 13 digits.
        long_runs: list[re.Match[str]] = []
        card_sized = False
        search = phone_run.search
        run = search(text, start)
        while run is not None:
            long_runs.append(run)
            end = run.end()
            if end - run.start() >= _CARD_DIGITS[0]:
                card_sized = True
            run = search(text, end)
        found_in = text
        if card_sized:
            cards = card_run.finditer(text, start)
            text = _mask_in_digit_runs(text, "card", kinds, _is_card, _CARD_DIGITS, cards, split)
        # Every digit in one run of eight or more (it holds the first digit, and no digit
        # follows it): no National Insurance number can be there. Its six digits follow a
        # letter (or a letter and a space), so a run holding them starts with them; with
        # two digits more, the run goes on after its sixth with a digit or a separator,
        # where the number needs its final letter (or a space and it). One digit search
        # instead of the candidates' (the bench's text: 7.7k -> ~2k instructions).
        all_in_one_run = (
            text is found_in
            and len(long_runs) == 1
            and first >= (only := long_runs[0]).start()
            and digit_at.search(text, only.end()) is None
        )
        if not all_in_one_run and ni_candidate.search(text, start) is not None:
            text = _mask(ni_number, text, "ni_number", kinds)
        if long_runs:  # masking cards and NI numbers only ever removes digits
            if (
                text is found_in
                and len(long_runs) == 1
                and _is_whole_phone((phone := long_runs[0]).group())
            ):
                # One run, a phone number on its own (the common case): masked whole, as
                # _mask_in_digit_runs would, without its loop and pieces.
                kinds.add("phone")
                return RedactionResult(
                    f"{text[: phone.start()]}[phone]{text[phone.end() :]}", _sorted(kinds)
                )
            # The runs found above, unless a card or NI number was masked since.
            phones = long_runs if text == found_in else phone_run.finditer(text, start)
            text = _mask_in_digit_runs(
                text, "phone", kinds, _is_phone, _PHONE_DIGITS, phones, split, _is_whole_phone
            )
        return RedactionResult(text, _sorted(kinds))


def _sorted(kinds: set[str]) -> tuple[str, ...]:
    # None or one kind, most texts: no sort to set up; two (a phone and an e-mail, say)
    # ordered by one comparison.
    count = len(kinds)
    if count < 2:
        return tuple(kinds)
    if count == 2:
        first, second = kinds
        return (first, second) if first < second else (second, first)
    return tuple(sorted(kinds))


def _mask(pattern: re.Pattern[str], text: str, kind: str, kinds: set[str]) -> str:
    masked, count = pattern.subn(f"[{kind}]", text)
    if count:
        kinds.add(kind)
    return masked


def _mask_emails(text: str, at: int, kinds: set[str]) -> str:
    """_mask(_EMAIL, ...) from where the first match can start: the local part's run of
    characters before the first "@" (``at``). A match needs an "@" after its local part,
    whose characters are never "@", so none starts before that run; searching the words
    before it cost the engine each word's length squared (1.3 -> 0.7 µs on the bench's
    text, measured)."""
    start = len(text[:at].rstrip(_LOCAL_PART))
    match = _EMAIL.search(text, start)
    if match is None:
        return text
    end = match.end()
    if text.find("@", end) < 0:
        # The only match (every one needs an "@"): spliced in, as the substitution would
        # (the pattern looks at nothing before where it starts, so searching ``text`` from
        # ``start`` finds what searching its slice does). 1.1 -> 0.8 µs, measured.
        kinds.add("email")
        return f"{text[: match.start()]}[email]{text[end:]}"
    masked = _mask(_EMAIL, text[start:], "email", kinds)
    return text[:start] + masked if start else masked


def _mask_ibans(
    text: str, kinds: set[str], start: int = 0, pattern: re.Pattern[str] = _IBAN
) -> str:
    """IBANs masked; none starts before ``start``. ``pattern``: _IBAN or its ASCII twin."""
    if pattern.search(text, start) is None:
        return text  # the common case, without a substitution's callback set up (0.3 µs)

    def replace(match: re.Match[str]) -> str:
        candidate = match.group()
        # The pattern may run on into a following word in capitals ("... 32 THEN"), so
        # drop trailing groups until the rest passes mod-97.
        for end in _group_ends_longest_first(candidate):
            if _is_iban(candidate[:end]):
                kinds.add("iban")
                return "[iban]" + candidate[end:]
        return candidate

    return pattern.sub(replace, text)


def _group_ends_longest_first(candidate: str) -> list[int]:
    ends = [index for index, character in enumerate(candidate) if character == " "]
    return [len(candidate), *reversed(ends)]


def _mask_in_digit_runs(
    text: str,
    kind: str,
    kinds: set[str],
    accepts: _WindowTest,
    digits: tuple[int, int],
    runs: Iterable[re.Match[str]],
    split: re.Pattern[str] = _DIGIT_GROUP_SPLIT,
    whole: Callable[[str], bool] | None = None,
) -> str:
    """Masks, inside each of ``runs`` (matches in ``text``), the longest windows of whole
    groups that ``accepts``.

    Windows rather than whole runs, so a number followed by a year or preceded by an
    order number ("ref 12 4111 1111 1111 1111") is still found. ``runs`` are only the
    runs with enough digits for a window to be accepted (the others would be kept as
    they are), so dates, amounts and short numbers cost nothing here.

    ``whole``, if given, says from a run's text alone that ``accepts`` takes the whole run
    as its window (then masked whole, as _accepted_spans would), or False when it cannot
    tell: the run is then split into its windows.
    """
    pieces: list[str] = []
    position = 0
    mask = f"[{kind}]"
    for run in runs:
        found = run.group()
        if whole is not None and whole(found):
            pieces.append(text[position : run.start()])
            pieces.append(mask)
            position = run.end()
            continue
        offset = run.start()
        for start, end in _accepted_spans(found, accepts, digits, split):
            pieces.append(text[position : offset + start])
            pieces.append(mask)
            position = offset + end
    if not pieces:
        return text
    kinds.add(kind)
    pieces.append(text[position:])
    return "".join(pieces)


def _accepted_spans(
    run: str,
    accepts: _WindowTest,
    digits: tuple[int, int],
    split: re.Pattern[str] = _DIGIT_GROUP_SPLIT,
) -> list[tuple[int, int]]:
    """The windows ``accepts`` takes, longest first from each group. ``digits`` bounds how
    many digits an accepted window can hold: the others are never built (a run of short
    groups, such as a date or an id, costs a count, not every window's test)."""
    fewest, most = digits
    # [what leads the first group, group, separator, group, ..., group, ""]: group i is
    # parts[2i + 1], and what precedes it parts[2i].
    parts = split.split(run)
    groups = parts[1::2]
    lengths = tuple(map(len, groups))
    digit_string = "".join(groups)
    whole_tried = fewest <= len(digit_string) <= most
    if whole_tried:
        # The whole run is the first window tried, and most often the one accepted (a
        # phone number on its own): taken without the bookkeeping below, and built from
        # the split at hand (what _window(parts, 0, len(groups) - 1) builds; its lead
        # as _lead(parts, 0) reads it, inline).
        leading = parts[0]
        if not leading:
            lead = ""
        elif leading[-1] == "+":
            lead = "+"
        elif leading[-1] == "(" and parts[2].startswith(")"):
            lead = "("
        else:
            lead = ""
        whole = _new_window(_Window, (digit_string, lengths, tuple(parts[2:-1:2]), lead))
        if accepts(whole):
            return [(len(leading) - len(lead), len(run) - len(parts[-1]))]
    before = list(accumulate(lengths, initial=0))  # digits before each group
    spans: list[tuple[int, int]] = []
    first = 0
    while first < len(groups):
        accepted = False
        # The whole run's window was refused above: not built and tried again.
        longest = len(groups) - 2 if first == 0 and whole_tried else len(groups) - 1
        for last in range(longest, first - 1, -1):
            count = before[last + 1] - before[first]
            if count < fewest:
                break  # the shorter windows from here hold fewer digits still
            if count > most:
                continue
            window = _window(parts, first, last)
            if accepts(window):
                # Where the window's groups start and end in ``run``, its lead before them.
                start = sum(map(len, parts[: 2 * first + 1])) - len(window.lead)
                end = sum(map(len, parts[: 2 * last + 2]))
                spans.append((start, end))
                first = last + 1
                accepted = True
                break
        if not accepted:
            first += 1
    return spans


def _window(parts: list[str], first: int, last: int) -> _Window:
    """The window of groups ``first..last`` of a run split into ``parts``."""
    lead = _lead(parts, first)
    if first == last:
        group = parts[2 * first + 1]
        return _new_window(_Window, (group, (len(group),), (), lead))
    chosen = parts[2 * first + 1 : 2 * last + 2]
    groups = chosen[::2]
    return _new_window(
        _Window, ("".join(groups), tuple(map(len, groups)), tuple(chosen[1::2]), lead)
    )


def _lead(parts: list[str], first: int) -> str:
    """What leads group ``first`` of a run split into ``parts``: "+", "(" or ""."""
    preceding = parts[2 * first]
    if preceding.endswith("+"):
        return "+"
    if preceding.endswith("(") and parts[2 * first + 2].startswith(")"):
        return "("  # a bracketed area code
    return ""


# A _Window made as the tuple it is: its class's __new__ (keywords, defaults) cost a third
# of a microsecond more a window, and a phone run builds one or more (measured).
_new_window = tuple.__new__


def _is_card(window: _Window) -> bool:
    digits = window.digits
    if window.lead == "+" or not 13 <= len(digits) <= 19 or digits[0] == "0":
        return False  # No card scheme issues numbers starting with 0; "+..." is a phone.
    if any(separator not in (" ", "-") for separator in window.separators):
        return False
    if not _has_card_layout(window.group_lengths):
        return False
    return _passes_luhn(digits)


def _has_card_layout(lengths: tuple[int, ...]) -> bool:
    if len(lengths) == 1:
        return True
    in_fours = all(length == 4 for length in lengths[:-1]) and 1 <= lengths[-1] <= 4
    return in_fours or lengths in _CARD_LAYOUTS


def _passes_luhn(digits: str) -> bool:
    total = 0
    for position, character in enumerate(reversed(digits)):
        value = int(character)
        if position % 2 == 1:
            value = value * 2 - 9 if value > 4 else value * 2
        total += value
    return total % 10 == 0


def _is_phone(window: _Window) -> bool:
    """A phone number is told apart from other numbers by how it starts and its length.

    - "+" then 8-15 digits (E.164 allows at most 15);
    - "00" (the international access code) then 9-15 digits;
    - a national trunk "0" or a bracketed area code, with 10-12 digits in all (UK, IE,
      FR and DE national numbers);
    - North American 3-3-4 groups ("415-555-2671") that phonenumbers says are valid.

    Dates, times, amounts, order numbers and 8-digit account numbers fail every rule.
    phonenumbers' own matcher is not used for the rest: at Leniency.VALID it misses
    numbers outside its allocation tables (such as Ofcom's reserved 07700 900xxx), at
    POSSIBLE it masks dates and account numbers, and scanning every text for five regions
    handles under 2,000 texts a second (measured: 1,900 texts of 200
    characters); this whole redactor handles about 13,000.
    """
    digits = window.digits
    by_lead = _phone_by_lead(digits, window.lead)
    if by_lead is not None:
        return by_lead
    if window.group_lengths == (3, 3, 4):
        return _is_valid_north_american(digits)
    return False


def _phone_by_lead(digits: str, lead: str) -> bool | None:
    """_is_phone's verdict from the digits and the lead alone, or None for a number that
    does not start with "+", "0" or "(" (then only its groups can tell)."""
    count = len(digits)
    if lead == "+":
        return 8 <= count <= 15
    if digits.startswith("00"):
        return 9 <= count - 2 <= 15
    if digits.startswith("0") or lead == "(":
        return 10 <= count <= 12
    return None


def _is_whole_phone(run: str) -> bool:
    """Whether _accepted_spans(run, _is_phone, _PHONE_DIGITS) is the whole run, told
    without splitting it (a phone number on its own, most runs; the bench's text: 72.7k ->
    61.2k instructions a redaction, callgrind),
    for runs of ASCII digits, spaces and hyphens led by a digit or "+"; False when it
    cannot tell so (a bracket, another separator, a number that needs its groups: the
    run is split as before).

    The whole run is the first window _accepted_spans tries. Its lead is "+" if the run
    starts with one (its only place in a run), else "" (a digit); its digits are the run's
    but the lead and separators. Every number _phone_by_lead accepts holds 8 to 17 digits,
    within _PHONE_DIGITS, so that window is tried; once accepted it spans the whole run,
    lead included.
    """
    if not run.isascii():
        return False
    first = run[0]
    if first == "+":
        lead, body = "+", run[1:]
    elif first == "(":
        return False
    else:
        lead, body = "", run
    digits = body.replace(" ", "").replace("-", "")
    return digits.isdigit() and _phone_by_lead(digits, lead) is True


@lru_cache(maxsize=4096)
def _is_valid_north_american(digits: str) -> bool:
    # phonenumbers' parse and validation cost 25-35 µs a number (measured); the answer
    # depends on the digits alone, and the same numbers (a helpline) recur across texts.
    try:
        number = phonenumbers.parse(digits, "US")
    except phonenumbers.NumberParseException:
        return False
    return phonenumbers.is_valid_number(number)


def _is_iban(candidate: str) -> bool:
    compact = candidate.replace(" ", "")
    if not 15 <= len(compact) <= 34:
        return False
    rearranged = compact[4:] + compact[:4]
    # Letters count as 10..35, so the whole IBAN reads as one big integer.
    return int("".join(str(int(character, 36)) for character in rearranged)) % 97 == 1
