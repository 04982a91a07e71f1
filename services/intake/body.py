"""JSON that cannot crash intake (the body's size is bounded while it streams by the
skeleton's ``BodyLimit``, shared/service/request_bodies.py, for every service).

A body is hostile input. ``json.loads`` raises ``RecursionError`` on deeply nested arrays
and ``ValueError`` on integers of more than 4,300 digits (CPython's guard against quadratic
conversion); both are a fault of the body, answered 422 like any malformed JSON, never 500.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any


class InvalidJson(ValueError):
    """The body is not JSON intake can read; the message is the reason, safe to answer."""


def parse_json(body: bytes) -> Any:
    """The JSON document in ``body``; InvalidJson (with a reason to answer) otherwise."""
    try:
        if body[:1] in _OPENERS:
            document = _object_or_array(body)
            if document is not _LEFT_TO_LOADS:
                return document
        return json.loads(body)
    except RecursionError:
        raise InvalidJson("invalid JSON: nested too deeply") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise InvalidJson(f"invalid JSON: {error}") from error
    except ValueError:
        # int() refuses more than sys.get_int_max_str_digits() digits (4,300 by default).
        raise InvalidJson("invalid JSON: a number has too many digits") from None


_OPENERS = (b"{", b"[")
# json.loads' own scanner: a default JSONDecoder's (an attribute typeshed leaves out).
_SCAN: Callable[[str, int], tuple[Any, int]] = vars(json.JSONDecoder())["scan_once"]
_LEFT_TO_LOADS = object()


def _object_or_array(body: bytes) -> Any:
    """What ``json.loads(body)`` gives for a body that is a UTF-8 object or array with
    nothing before or after it (what senders post), from json's scanner itself, without
    loads' encoding detection and its two whitespace matches (2.5 -> 1.1 µs for a
    demand, measured). Anything else, any fault included (another encoding, a lone
    surrogate, trailing text, a number too long, nesting too deep), is left to
    ``json.loads``, which decides and words the reason as before."""
    try:
        text = body.decode()
        document, end = _SCAN(text, 0)
    except (ValueError, StopIteration, RecursionError):
        return _LEFT_TO_LOADS
    return document if end == len(text) else _LEFT_TO_LOADS
