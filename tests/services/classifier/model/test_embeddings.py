"""The packaged sentence embeddings load and embed offline: no socket, no download."""

from __future__ import annotations

import socket
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from services.classifier.model import embeddings
from services.classifier.model.embeddings import SentenceEmbedder

LOCAL = ("127.0.0.1", "::1", "localhost")


class NetworkTouched(AssertionError):
    pass


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Any connection or name lookup to anything but this machine fails the test (and is
    recorded, in case a library swallows the error)."""
    attempts: list[str] = []
    real_connect = socket.socket.connect
    real_connect_ex = socket.socket.connect_ex

    def local(address: Any) -> bool:
        return isinstance(address, tuple) and str(address[0]) in LOCAL

    def connect(self: socket.socket, address: Any) -> None:
        if not local(address):
            attempts.append(f"connect {address}")
            raise NetworkTouched(f"connect to {address}")
        real_connect(self, address)

    def connect_ex(self: socket.socket, address: Any) -> int:
        if not local(address):
            attempts.append(f"connect_ex {address}")
            raise NetworkTouched(f"connect to {address}")
        return real_connect_ex(self, address)

    def getaddrinfo(host: Any, *args: Any, **kwargs: Any) -> Any:
        attempts.append(f"getaddrinfo {host}")
        raise NetworkTouched(f"name lookup of {host}")

    def from_pretrained(*args: Any, **kwargs: Any) -> Any:  # the tokenizer's download path
        attempts.append(f"Tokenizer.from_pretrained {args}")
        raise NetworkTouched("Tokenizer.from_pretrained")

    import tokenizers

    monkeypatch.setattr(socket.socket, "connect", connect)
    monkeypatch.setattr(socket.socket, "connect_ex", connect_ex)
    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    monkeypatch.setattr(tokenizers.Tokenizer, "from_pretrained", from_pretrained)
    for variable in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        monkeypatch.delenv(variable, raising=False)  # prove it without the offline switches
    return attempts


def test_loads_and_embeds_without_touching_the_network(
    no_network: list[str], tmp_path: Path
) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # wordllama warns before it falls back to a download
        embedder = SentenceEmbedder.load(cache_dir=tmp_path / "cache")
        vectors = embedder.embed(["my bins were not collected", "nobody came for the rubbish"])

    assert no_network == []
    assert (tmp_path / "cache" / "tokenizers" / embeddings.TOKENIZER_FILE).is_file()
    assert vectors.shape == (2, 256)
    assert vectors.dtype == np.float32
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)


def test_a_temporary_cache_is_removed_after_loading(
    no_network: list[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", None)

    SentenceEmbedder.load().embed(["hello"])

    assert list(tmp_path.iterdir()) == []
    assert no_network == []


def test_similar_meanings_are_closer_than_different_ones() -> None:
    embedder = embeddings.shared_embedder()

    bins, rubbish, bill = embedder.embed(
        ["my bins were not collected", "nobody came for the rubbish", "I want to pay my bill"]
    )

    assert float(bins @ rubbish) > float(bins @ bill) + 0.1


def test_texts_without_tokens_are_zero_rows_and_an_empty_batch_is_empty() -> None:
    embedder = embeddings.shared_embedder()

    vectors = embedder.embed(["", "hello"])

    assert not vectors[0].any()
    assert vectors[1].any()
    assert embedder.embed([]).shape == (0, 256)


def test_a_batch_is_each_texts_unit_mean_of_its_words_tokens() -> None:
    embedder = embeddings.shared_embedder()
    texts = ["my bins were not collected", "", "  pay   my Bill!! ", "x", "ÏSTANBUL ok ok"]

    batch = embedder.embed(texts)

    for row, text in enumerate(texts):
        ids = [int(i) for word in text.split() for i in embedder._word_ids([word])[0]]
        total = embedder._table[ids].astype(np.float64).sum(axis=0)
        norm = np.linalg.norm(total)
        expected = total / norm if norm else total
        assert np.allclose(batch[row], expected, atol=1e-6)


def test_importing_the_module_loads_nothing() -> None:
    import subprocess
    import sys

    code = (
        "import sys; import services.classifier.model.text_model; "
        "import services.classifier.model.embeddings as e; "
        "assert 'wordllama' not in sys.modules and e._shared is None"
    )
    root = Path(__file__).resolve().parents[4]
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=root, check=False
    )
    assert result.returncode == 0, result.stderr


def test_the_guard_catches_wordllamas_own_download_path(
    no_network: list[str], tmp_path: Path
) -> None:
    """Without the copied files and ``disable_download``, wordllama would go online."""
    wordllama = embeddings._import_wordllama()

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(NetworkTouched):
            wordllama.WordLlama.load("l2_supercat", cache_dir=tmp_path, dim=256)

    assert no_network
