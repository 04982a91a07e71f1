"""Sentence meaning as features: WordLlama's static 256-dimensional embeddings, offline.

TF-IDF knows only the words it was trained on; an organisation's customers say the same thing
in other words ("my bins weren't collected" / "nobody came for the rubbish"). Static token
embeddings averaged over a sentence carry that similarity at a cost close to a table lookup.

The weights ship inside the ``wordllama`` wheel (``l2_supercat_256``). Its loader looks for the
bundled tokenizer in a folder that does not exist (``tokenizer/`` instead of ``tokenizers/``)
and would then download one, and the machines have no internet at run time. So ``load``
copies the bundled tokenizer into a temporary cache directory and calls the loader with
``cache_dir`` pointed there and ``disable_download=True``: the files are found locally or the
load fails, and nothing ever goes to the network. Nothing is loaded at import time; one
embedder per process is loaded on first use and shared by every model version.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from scipy import sparse  # type: ignore[import-untyped]

from services.classifier.model.word_store import Analysis, WordStore, gather_texts

CONFIG = "l2_supercat"
DIMENSIONS = 256
TOKENIZER_FILE = "l2_supercat_tokenizer_config.json"

log = logging.getLogger(__name__)


class EmbeddingsUnavailable(RuntimeError):
    """The packaged embedding model cannot be loaded (wordllama missing or incomplete)."""


def _import_wordllama() -> Any:
    # wordllama calls logging.basicConfig(level=INFO) when imported; keep the process's own
    # logging configuration as it was.
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    try:
        import wordllama  # type: ignore[import-untyped]
    except ImportError as error:
        raise EmbeddingsUnavailable(f"the wordllama package is not installed: {error}") from error
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)
    return wordllama


def bundled_files() -> tuple[Path, Path]:
    """(tokenizer, weights) as shipped inside the wordllama wheel."""
    package = Path(_import_wordllama().__file__).parent
    tokenizer = package / "tokenizers" / TOKENIZER_FILE
    weights = package / "weights" / f"{CONFIG}_{DIMENSIONS}.safetensors"
    missing = [str(p) for p in (tokenizer, weights) if not p.is_file()]
    if missing:
        raise EmbeddingsUnavailable(f"wordllama is installed without {', '.join(missing)}")
    return tokenizer, weights


class SentenceEmbedder:
    """Text -> unit-length mean of its tokens' static embeddings (float32, 256 columns)."""

    dimensions = DIMENSIONS

    def __init__(self, table: np.ndarray, tokenizer: Any, max_words: int = 200_000) -> None:
        self._table = np.ascontiguousarray(table, dtype=np.float32)
        tokenizer.no_padding()  # ragged ids: no padded 3-D array
        tokenizer.no_truncation()
        self._tokenizer = tokenizer
        self._store = WordStore(self._encode, np.int64, values=False, max_words=max_words)

    @classmethod
    def load(cls, cache_dir: Path | None = None) -> SentenceEmbedder:
        """Load the bundled model through wordllama's own loader, never downloading.

        ``cache_dir`` receives a copy of the bundled files (a temporary directory, removed
        after loading, when not given).
        """
        wordllama = _import_wordllama()
        tokenizer_file, weights_file = bundled_files()
        with tempfile.TemporaryDirectory(prefix="wordllama-") as temporary:
            cache = Path(cache_dir) if cache_dir is not None else Path(temporary)
            for sub, source in (("tokenizers", tokenizer_file), ("weights", weights_file)):
                target = cache / sub / source.name
                if not target.is_file():
                    target.parent.mkdir(parents=True, exist_ok=True)
                    shutil.copyfile(source, target)
            try:
                inference = wordllama.WordLlama.load(
                    CONFIG, cache_dir=cache, dim=DIMENSIONS, disable_download=True
                )
            except FileNotFoundError as error:  # raised instead of downloading
                raise EmbeddingsUnavailable(str(error)) from error
        return cls(inference.embedding, inference.tokenizer)

    def _encode(self, words: Sequence[str]) -> list[Analysis]:
        """Token ids of each word, tokenized alone: the tokenizer marks every word's start
        (``▁``), so a text's tokens are its words' tokens (kept per word in a ``WordStore``,
        since customers reuse words)."""
        encode = getattr(self._tokenizer, "encode_batch_fast", self._tokenizer.encode_batch)
        return [(encoding.ids, None) for encoding in encode(list(words), add_special_tokens=False)]

    def _word_ids(self, words: Sequence[str]) -> list[np.ndarray]:
        """Each word's token ids."""
        rows = self._store.lookup(words)
        indptr, columns = rows.indptr, rows.columns
        return [columns[indptr[row] : indptr[row + 1]] for row in rows.words.tolist()]

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """One row per text; a text with no token is a row of zeros."""
        if not texts:
            return np.zeros((0, self.dimensions), dtype=np.float32)
        split = [text.split() for text in texts]
        # Each word's tokens in order, read from the store by numpy: no Python per word.
        columns, indptr = gather_texts(self._store, split)
        np.clip(columns, 0, self._table.shape[0] - 1, out=columns)
        # (texts x vocabulary) token counts @ (vocabulary x 256): the sum of each text's
        # token vectors, in C, without a (tokens x 256) intermediate. Unit length makes the
        # sum a mean.
        counts = sparse.csr_matrix(
            (
                np.ones(len(columns), dtype=np.float32),
                columns,
                indptr,
            ),
            shape=(len(texts), self._table.shape[0]),
        )
        sums = np.asarray(counts @ self._table, dtype=np.float32)
        norms = np.linalg.norm(sums, axis=1, keepdims=True)
        norms[norms == 0] = 1.0
        result: np.ndarray = sums / norms
        return result


_shared: SentenceEmbedder | None = None
_shared_lock = threading.Lock()


def shared_embedder() -> SentenceEmbedder:
    """The process's embedder, loaded on first use (about 0.1 s) and kept."""
    global _shared
    with _shared_lock:
        if _shared is None:
            _shared = SentenceEmbedder.load()
            log.info("loaded the packaged sentence embeddings (wordllama %s)", CONFIG)
        return _shared
