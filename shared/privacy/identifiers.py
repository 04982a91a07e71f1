"""Identifiers that are themselves personal data: refused, never masked, never echoed.

An id, a customer or case reference, a reviewer's name in ``labelled_by``, a source or a
category travels as a record key, a header, a database key and a label value: it must stay
what it is, so it cannot be masked like free text. An identifier that is an e-mail address,
a phone number, a payment card number, an IBAN or a National Insurance number (also in
compact form: ``07700900123``, ``+447700900123``, ``4111111111111111``, ``jo@example.com``,
``C-07700900123``) is a sender's mistake to refuse, naming the field and the kind only.

The test is the redactor's own (built-in detectors, not an organisation's extra patterns,
which describe its own references): a value is personal data when redacting it would
change it. One exception, measured: a UUID's or a hexadecimal hash's decimal stretches read
as phone numbers (redacting changes 0.9 % of random UUIDs, and 0.8 % of 32-digit hex ids),
so UUIDs and hexadecimal tokens (digits and ``a-f``, at least one of each; lower-case, or
of either case from 16 characters) are opaque and not looked into. The cost: a phone
number glued to hex letters only (``e07700900123``) is taken for a hash.
"""

from __future__ import annotations

import re

from shared.privacy.redaction import Redactor, ascii_twin

KIND_NAMES = {
    "email": "an e-mail address",
    "phone": "a phone number",
    "card": "a payment card number",
    "iban": "a bank account number (IBAN)",
    "ni_number": "a National Insurance number",
}

_UUID = r"[0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12}"
# Hexadecimal with at least one letter and one digit: lower-case of any length (short
# hashes), or of either case from 16 characters (digests; "C07700900123" is not one).
_HEX_LOWER = r"(?=[0-9]*[a-f])(?=[a-f]*[0-9])[0-9a-f]+"
_HEX_LONG = r"(?=[0-9]*[A-Fa-f])(?=[A-Fa-f]*[0-9])[0-9A-Fa-f]{16,}"
_OPAQUE = re.compile(rf"(?<![A-Za-z0-9])(?:{_UUID}|{_HEX_LOWER}|{_HEX_LONG})(?![A-Za-z0-9])")
_DETECTORS = Redactor()  # the built-in detectors only, compiled once
# "Could this be personal data?": what each built-in detector needs to find anything, so a
# value without any of it is not personal data and the detectors, which cost ten to a
# hundred times more, are not run (docs/performance.md: 25% of a batch's CPU before):
# - an "@" (e-mail);
# - a country code, two check digits and eleven more capitals or digits at most a space
#   apart (an IBAN is 15 to 34 of them, grouped as its pattern groups them);
# - a run of digit groups holding at least eight digits, as the redactor finds phones in
#   (a card's thirteen are such a run): eight digits, each at most three separators after
#   the one before it, as the redactor's runs are (``_runs_of_at_least``). Eight
#   characters of digits and separators were not enough to tell: an id of short groups
#   ("3f9a2b-k0-12-345", six digits) passed and went through the whole redactor (a
#   batched event of the bench's: 289k -> ~255k instructions, callgrind);
# - a National Insurance number's six digits in pairs at most a space apart, and its final
#   letter, A to D.
# The last two start with a digit and five more digits or separators: the first and
# cheapest digit search. Each search starts with a character class, so the engine skips to
# where it can match; lookbehinds or an alternation of all of them made it try every
# position (2 µs an id against 0.5, measured). Blanking UUIDs and hashes (below) turns
# their characters into "x", which none of these takes: it never makes a value pass.
_IBAN_START = re.compile(r"[A-Z]{2}\d\d(?: ?[A-Z0-9]){11}")
_SIX_CLOSE = re.compile(r"\d[\d .()\-]{5}")
_RUN_OR_NI = re.compile(r"\d(?:(?:[ .()\-]{0,3}\d){7}|\d ?\d\d ?\d\d ?[A-Da-d])")


def personal_data_kind(value: str) -> str | None:
    """The kind of personal data ``value`` is or holds ("email", "phone", ...), or None."""
    if not _could_be_personal(value):
        return None  # most identifiers stop here
    opaque = _OPAQUE.sub(_blanked, value)
    if opaque is not value and not _could_be_personal(opaque):
        return None  # what made it a candidate was a UUID or a hash
    kinds = _DETECTORS.redact(opaque).kinds
    return kinds[0] if kinds else None


# Their ASCII twins, for the values that are ASCII (most ids): the same matches there, each
# \d a table look-up rather than a Unicode database call (redaction.ascii_twin).
_UNICODE_CHECKS = (_IBAN_START, _SIX_CLOSE, _RUN_OR_NI)
_ASCII_CHECKS = tuple(map(ascii_twin, _UNICODE_CHECKS))


def _could_be_personal(value: str) -> bool:
    if "@" in value:
        return True
    iban_start, six_close, run_or_ni = _ASCII_CHECKS if value.isascii() else _UNICODE_CHECKS
    if iban_start.search(value) is not None:
        return True
    six = six_close.search(value)
    # Every match of _RUN_OR_NI starts with six digits or separators, a match of
    # _SIX_CLOSE: none starts before the first of those (3f9a2b-k12-345: 0.76 -> 0.62 µs).
    return six is not None and run_or_ni.search(value, six.start()) is not None


def _blanked(match: re.Match[str]) -> str:
    return "x" * len(match.group())


def refusal_reason(kind: str) -> str:
    """Why an identifier is refused, without the value: safe to answer and to log."""
    name = KIND_NAMES.get(kind, "personal data")
    return f"looks like {name}; send an opaque reference, not personal data"
