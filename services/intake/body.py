"""JSON that cannot crash intake (the body's size is bounded while it streams by the
skeleton's ``BodyLimit``, shared/service/request_bodies.py, for every service).

A body is hostile input. ``json.loads`` raises ``RecursionError`` on deeply nested arrays
and ``ValueError`` on integers of more than 4,300 digits (CPython's guard against quadratic
conversion); both are a fault of the body, answered 422 like any malformed JSON, never 500.
"""

from __future__ import annotations

import json
from typing import Any


class InvalidJson(ValueError):
    """The body is not JSON intake can read; the message is the reason, safe to answer."""


def parse_json(body: bytes) -> Any:
    """The JSON document in ``body``; InvalidJson (with a reason to answer) otherwise."""
    try:
        return json.loads(body)
    except RecursionError:
        raise InvalidJson("invalid JSON: nested too deeply") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise InvalidJson(f"invalid JSON: {error}") from error
    except ValueError:
        # int() refuses more than sys.get_int_max_str_digits() digits (4,300 by default).
        raise InvalidJson("invalid JSON: a number has too many digits") from None
