"""A single request's mode read off its ASGI headers is the one read through Starlette's
Headers: the first Content-Type, a ce-specversion anywhere, the same 415 otherwise."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from starlette.datastructures import Headers

from services.intake.decoding import (
    Mode,
    UnsupportedMediaType,
    single_mode,
    single_mode_of,
)

CASES: list[list[tuple[bytes, bytes]]] = [
    [(b"content-type", b"application/json")],
    [(b"content-type", b"Application/JSON; charset=utf-8")],
    [(b"content-type", b"application/json"), (b"ce-specversion", b"1.0")],
    [(b"ce-specversion", b"1.0"), (b"host", b"t"), (b"content-type", b"application/json")],
    [(b"content-type", b"application/cloudevents+json")],
    [(b"content-type", b"application/cloudevents+json"), (b"ce-specversion", b"1.0")],
    [(b"content-type", b"text/plain"), (b"content-type", b"application/json")],
    [(b"content-type", b"application/json"), (b"content-type", b"text/plain")],
    [(b"content-type", b"text/plain")],
    [(b"content-type", b"")],
    [(b"host", b"t")],
    [],
    [(b"content-type", "application/j\u00e9son".encode("latin-1"))],
]


def mode_or_refusal(read: Callable[[], Mode]) -> Mode | str:
    try:
        return read()
    except UnsupportedMediaType as error:
        return f"415 {error} {error.accepted}"


@pytest.mark.parametrize("raw", CASES)
def test_the_mode_off_the_raw_headers_is_the_headers_mode(raw: list[tuple[bytes, bytes]]) -> None:
    expected = mode_or_refusal(lambda: single_mode(Headers(raw=raw)))
    assert mode_or_refusal(lambda: single_mode_of(raw)) == expected
