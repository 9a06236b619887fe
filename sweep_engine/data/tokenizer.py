"""Tokenizers: a byte-level BPE trained on a corpus, or GPT-2's vocab.json / merges.txt.

A trained tokenizer is cached as `<cache_dir>/tokenizers/<key>.json`, where the key hashes the corpus's
fingerprint and the settings, so every trial and every sweep that asks for the same tokenizer reuses one file.
Both kinds use GPT-2's byte-level pre-tokenizer, so any text (Chinese included) is encoded without unknown
tokens, and one end-of-text token that separates documents.
"""

from __future__ import annotations

import hashlib
import itertools
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

from sweep_engine.data import cache, corpora
from sweep_engine.errors import DataError
from sweep_engine.spec import CorpusSpec, TokenizerSpec, content_hash

EOT = "<|endoftext|>"
# Bump when the way a tokenizer is built changes, so old cache entries are not reused.
FORMAT = 1
MIN_VOCAB = 257  # 256 byte tokens + end-of-text


def tokenizer_key(spec: TokenizerSpec) -> str:
    """The cache key of a tokenizer: a hash of its corpus's fingerprint (bpe) or its files' bytes (files)."""
    if spec.kind == "bpe":
        if spec.corpus is None:
            raise DataError("a tokenizer of kind 'bpe' needs `corpus` to train on, but got none")
        ident: dict[str, object] = {"corpus": corpora.fingerprint(spec.corpus), "vocab_size": spec.vocab_size}
    elif spec.kind == "files":
        ident = {
            "vocab": _file_sha(spec.vocab_file, "vocab_file"),
            "merges": _file_sha(spec.merges_file, "merges_file"),
        }
    else:
        raise DataError(f"tokenizer kind must be 'bpe' or 'files', but got {spec.kind!r}")
    return content_hash({"kind": spec.kind, "format": FORMAT, **ident})


def _file_sha(path: str | None, what: str) -> str:
    if not path:
        raise DataError(f"a tokenizer of kind 'files' needs `{what}`, but got none")
    p = Path(path).expanduser()
    if not p.is_file():
        raise DataError(f"tokenizer {what} {path!r} does not exist")
    return hashlib.sha256(p.read_bytes()).hexdigest()


def load_tokenizer(spec: TokenizerSpec, cache_dir: Path) -> Tokenizer:
    """The tokenizer a spec names, trained (bpe) or converted (files) once and then read from the cache.

    Args:
        spec: which tokenizer.
        cache_dir: the root of the data caches.

    Raises:
        DataError: the corpus or files cannot be read, or the vocab size is below 257.
    """
    return load_tokenizer_with_key(spec, cache_dir)[0]


def load_tokenizer_with_key(
    spec: TokenizerSpec, cache_dir: Path, progress: Callable[[str], None] | None = None
) -> tuple[Tokenizer, str]:
    """load_tokenizer, also returning the tokenizer's cache key (part of every token cache's key);
    `progress` is told when a tokenizer has to be built."""
    key = tokenizer_key(spec)
    path = tokenizer_path(cache_dir, key)

    def build(tmp: Path) -> None:
        if progress is not None:
            what = corpora.describe(spec.corpus) if spec.corpus else spec.vocab_file
            progress(f"tokenizer {spec.kind} {spec.vocab_size if spec.kind == 'bpe' else ''} on {what}")
        tok = train_bpe(spec) if spec.kind == "bpe" else _from_files(spec)
        tok.save(str(tmp))

    cache.build_once(path, build)
    return Tokenizer.from_file(str(path)), key


def tokenizer_path(cache_dir: Path, key: str) -> Path:
    """Where the tokenizer with cache key `key` is kept (tokenizers' JSON format)."""
    return Path(cache_dir) / "tokenizers" / f"{key}.json"


def _byte_level(model: models.Model) -> Tokenizer:
    tok = Tokenizer(model)
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    return tok


def train_bpe(spec: TokenizerSpec) -> Tokenizer:
    """Train a byte-level BPE with `spec.vocab_size` tokens (end-of-text included) on `spec.corpus`."""
    if spec.vocab_size < MIN_VOCAB:
        raise DataError(
            f"vocab_size >= {MIN_VOCAB} must hold (256 bytes + end-of-text), but got {spec.vocab_size}"
        )
    assert spec.corpus is not None  # tokenizer_key checked it
    tok = _byte_level(models.BPE())
    trainer = trainers.BpeTrainer(
        vocab_size=spec.vocab_size,
        special_tokens=[EOT],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    batches = (b.texts for b in corpora.iter_unit_batches(spec.corpus))
    tok.train_from_iterator(batches, trainer=trainer)
    return tok


def _from_files(spec: TokenizerSpec) -> Tokenizer:
    try:
        model = models.BPE.from_file(
            str(Path(spec.vocab_file or "").expanduser()), str(Path(spec.merges_file or "").expanduser())
        )
    except Exception as e:  # tokenizers raises a bare Exception on malformed files
        raise DataError(f"cannot read tokenizer files {spec.vocab_file!r} / {spec.merges_file!r}: {e}") from e
    tok = _byte_level(model)
    tok.add_special_tokens([EOT])  # GPT-2's vocab has it (id 50256): this marks it special, adds nothing
    return tok


def eot_id(tok: Tokenizer) -> int:
    """The id of the end-of-text token."""
    i = tok.token_to_id(EOT)
    if i is None:
        raise DataError(f"the tokenizer has no {EOT} token")
    return int(i)


def encode_documents(tok: Tokenizer, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Tokenize documents in one parallel call.

    Returns:
        (ids, lengths): all token ids concatenated (int32), and the number of tokens of each document.
    """
    # Not encode_batch_fast: it skips the offsets, yet measured slower here (tokenizers 0.23, 2 cores).
    ids = [e.ids for e in tok.encode_batch(texts, add_special_tokens=False)]
    lengths = np.fromiter(map(len, ids), dtype=np.int64, count=len(ids))
    flat = np.fromiter(itertools.chain.from_iterable(ids), dtype=np.int32, count=int(lengths.sum()))
    return flat, lengths


def count_tokens(tok: Tokenizer, texts: Iterable[str], batch_size: int = 4096) -> tuple[int, int]:
    """(tokens, characters) of a stream of texts."""
    n_tok = n_chars = 0
    it = iter(texts)
    while batch := list(itertools.islice(it, batch_size)):
        n_tok += sum(len(e) for e in tok.encode_batch(batch, add_special_tokens=False))
        n_chars += sum(map(len, batch))
    return n_tok, n_chars


def tokens_per_char(tok: Tokenizer, corpus: CorpusSpec, max_chars: int | None = 10_000_000) -> float:
    """Tokens per character of a corpus's text under a tokenizer (no end-of-text tokens counted).

    Args:
        tok: the tokenizer.
        corpus: the text.
        max_chars: measure on the first this many characters (source order); None = all of it.
    """

    def texts() -> Iterable[str]:
        budget = max_chars
        for batch in corpora.iter_unit_batches(corpus):
            for t in batch.texts:
                if budget is not None:
                    if budget <= 0:
                        return
                    t = t[:budget]
                    budget -= len(t)
                yield t

    n_tok, n_chars = count_tokens(tok, texts())
    if n_chars == 0:
        raise DataError(f"corpus {corpus} has no text to measure")
    return n_tok / n_chars
