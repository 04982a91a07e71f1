"""parse_json gives what json.loads gives (or the same refusal), also for the bodies its
quick path for a UTF-8 object or array leaves to json.loads."""

from __future__ import annotations

import codecs
import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.intake.body import InvalidJson, parse_json


def reference(body: bytes) -> Any:
    """parse_json as it was: json.loads, and its refusals worded."""
    try:
        return json.loads(body)
    except RecursionError:
        raise InvalidJson("invalid JSON: nested too deeply") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise InvalidJson(f"invalid JSON: {error}") from error
    except ValueError:
        raise InvalidJson("invalid JSON: a number has too many digits") from None


def outcome(parse: Any, body: bytes) -> tuple[str, str]:
    try:
        # repr, not ==: NaN is not equal to itself, and 1 == 1.0 == True.
        return "ok", repr(parse(body))
    except InvalidJson as error:
        return "refused", str(error)


DEMAND = {"id": "d-1", "text": "caf\u00e9 \u2603 \U0001f600", "n": [1, 2.5, None, True]}
BODIES = [
    json.dumps(DEMAND).encode(),
    json.dumps(DEMAND, ensure_ascii=False).encode(),
    json.dumps([DEMAND, DEMAND]).encode(),
    b"{}",
    b"[]",
    b"{} ",  # trailing whitespace
    b" {}",
    b"{}\n",
    b"{} x",  # trailing text
    b"{}{}",
    b"{",
    b"[1,]",
    b'{"a": NaN, "b": Infinity, "c": -Infinity}',
    b'{"a": 1, "a": 2}',
    b'{"a": "\\ud800"}',  # an escaped lone surrogate: json.loads keeps it
    b'{"a": "\xed\xa0\x80"}',  # an encoded lone surrogate: loads decodes with surrogatepass
    b'{"a": "\xff"}',  # not UTF-8
    codecs.BOM_UTF8 + b"{}",
    json.dumps(DEMAND).encode("utf-16-le"),
    json.dumps(DEMAND).encode("utf-16"),
    json.dumps(DEMAND).encode("utf-32-le"),
    json.dumps([DEMAND]).encode("utf-16-be"),
    b"{\x00}\x00",
    b'{"n": ' + b"9" * 5000 + b"}",
    b"[" * 100_000 + b"]" * 100_000,
    b'{"a": "\x01"}',  # a control character in a string
    b'["\\u00e9", 1e400, -0.0, 1E-7]',
    b"",
    b"{]",
]


@pytest.mark.parametrize("body", BODIES)
def test_a_body_parses_as_json_loads_parses_it(body: bytes) -> None:
    assert outcome(parse_json, body) == outcome(reference, body)


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(),
    lambda children: st.lists(children) | st.dictionaries(st.text(), children),
    max_leaves=20,
)


@given(
    st.dictionaries(st.text(), JSON_VALUES) | st.lists(JSON_VALUES),
    st.sampled_from(["utf-8", "utf-16", "utf-16-le", "utf-32"]),
    st.booleans(),
    st.sampled_from(["", " ", "\n", "x", "}"]),
)
@settings(max_examples=300, deadline=None)
def test_any_document_parses_as_json_loads_parses_it(
    document: Any, encoding: str, ascii_only: bool, after: str
) -> None:
    body = (json.dumps(document, ensure_ascii=ascii_only) + after).encode(encoding, "surrogatepass")
    assert outcome(parse_json, body) == outcome(reference, body)
