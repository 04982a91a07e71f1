"""Reading a request body safely: never more than the limit, JSON that cannot crash intake.

A body is hostile input. ``json.loads`` raises ``RecursionError`` on deeply nested arrays
and ``ValueError`` on integers of more than 4,300 digits (CPython's guard against quadratic
conversion); both are a fault of the body, answered 422 like any malformed JSON, never 500.
"""

from __future__ import annotations

import json
from typing import Any

from fastapi import Request


class BodyTooLarge(ValueError):
    def __init__(self, limit: int) -> None:
        super().__init__(f"the body is larger than the limit of {limit} bytes")
        self.limit = limit


class InvalidJson(ValueError):
    """The body is not JSON intake can read; the message is the reason, safe to answer."""


async def read_limited_body(request: Request, limit: int) -> bytes:
    """The body, or BodyTooLarge as soon as it passes ``limit`` (declared or streamed).

    A client that disconnects mid-body raises starlette's ``ClientDisconnect``, which the
    service skeleton answers (to nobody) and logs at INFO: routine, not an error.
    """
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise BodyTooLarge(limit)
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge(limit)
        chunks.append(chunk)
    return b"".join(chunks)


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
