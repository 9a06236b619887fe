"""Validation sets and nested training subsets, as pure functions of a tokenized corpus and a seed.

A corpus is a sequence of units (verses, or documents) grouped into documents (chapters, or the documents
themselves); each unit has a hold-out key (verse id, or document index).

- Validation: the units whose key is among the first keys of a seeded permutation of the candidate keys
  (`val_unit` "docs": `val_size` keys; "tokens": keys until the validation array holds >= `val_size` tokens).
  For the Bible the candidates are the verse ids every language has, so the same ids are held out everywhere.
- Test: the next `test_size` keys of the same permutation (disjoint from validation, the same ids in every
  language too): the best step and configuration are chosen on validation, the reported losses come from test.
  With test_size 0 the validation set is exactly what it was before test splits existed.
- Training: every other unit. Documents are laid out in a second seeded permutation, the units of a document
  joined by a separator token (newline) and each document followed by end-of-text. A training set of D_F
  tokens is the first D_F tokens of that one sequence, so every smaller subset is a prefix of every larger one.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from sweep_engine.data.tokenfile import TokenReader, release
from sweep_engine.errors import DataError

# Units are gathered in chunks of about this many tokens, so a paper-scale corpus never needs an index array
# the size of the whole corpus in memory (a chunk's index arrays take ~25 bytes per token: ~25 MiB).
CHUNK_TOKENS = 1 << 20


@dataclass
class Units:
    """A tokenized corpus: unit i has tokens `tokens[offsets[i]:offsets[i + 1]]` and `chars[i]` characters."""

    tokens: np.ndarray  # flat token ids (uint16 or int32)
    offsets: np.ndarray  # int64, len n + 1
    chars: np.ndarray  # int64
    groups: np.ndarray  # int64: document of each unit; a document's units are consecutive
    keys: np.ndarray  # int64: hold-out key
    # The token file behind `tokens` (prepare.py sets it): streamed layouts then read units with pread.
    source: TokenReader | None = None

    @property
    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)


def _rng(seed: int, stream: int) -> np.random.Generator:
    # Separate streams for the validation draw and the training order: changing val_size leaves the
    # training document order as it was.
    return np.random.default_rng([stream, seed])


def choose_validation(
    candidates: np.ndarray,
    val_size: int,
    unit: str,
    seed: int,
    key_tokens: np.ndarray | None = None,
) -> np.ndarray:
    """The validation keys alone (choose_heldout with no test split)."""
    return choose_heldout(candidates, val_size, 0, unit, seed, key_tokens)[0]


def choose_heldout(
    candidates: np.ndarray,
    val_size: int,
    test_size: int,
    unit: str,
    seed: int,
    key_tokens: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """The validation and test keys: consecutive blocks of one seeded permutation of `candidates` (each
    sorted); validation first, so it does not depend on `test_size`.

    Args:
        candidates: sorted keys that may be held out.
        val_size, test_size: how many keys ("docs") or tokens ("tokens") each; test_size may be 0.
        unit: "docs" or "tokens".
        seed: the split seed.
        key_tokens: "tokens" only: tokens each candidate key adds to a held-out array.

    Raises:
        DataError: a size is out of range, or the held-out sets would leave no training documents.
    """
    if val_size <= 0 or test_size < 0:
        raise DataError(f"val_size > 0 and test_size >= 0 must hold, but got {val_size}, {test_size}")
    perm = _rng(seed, 0).permutation(len(candidates))
    if unit == "docs":
        if val_size + test_size >= len(candidates):
            raise DataError(
                f"val_size + test_size < number of documents that may be held out must hold (training needs "
                f"the rest), but got val_size={val_size}, test_size={test_size}, documents={len(candidates)}"
            )
        k_val, k_all = val_size, val_size + test_size
    elif unit == "tokens":
        if key_tokens is None:
            raise ValueError("key_tokens is required when unit == 'tokens'")
        cum = np.cumsum(key_tokens[perm])
        k_val = int(np.searchsorted(cum, val_size, side="left")) + 1  # first prefix with >= val_size tokens
        before = int(cum[k_val - 1]) if k_val <= len(cum) else 0
        k_all = int(np.searchsorted(cum, before + test_size, side="left")) + 1 if test_size else k_val
        if k_all >= len(candidates):
            total = int(cum[-1]) if len(cum) else 0
            raise DataError(
                f"held-out sets of val_size={val_size} and test_size={test_size} tokens must leave training "
                f"documents, but the {len(candidates)} documents that may be held out have {total} tokens"
            )
    else:
        raise DataError(f"val_unit must be 'docs' or 'tokens', but got {unit!r}")
    return np.sort(candidates[perm[:k_val]]), np.sort(candidates[perm[k_val:k_all]])


def tokens_per_key(units: Units, candidates: np.ndarray) -> np.ndarray:
    """Tokens each candidate key adds to a validation array: its units' tokens + 1 separator or end-of-text."""
    idx = np.searchsorted(candidates, units.keys)
    idx = np.clip(idx, 0, max(len(candidates) - 1, 0))
    hit = candidates[idx] == units.keys if len(candidates) else np.zeros(len(units.keys), bool)
    return np.bincount(idx[hit], weights=(units.lengths + 1)[hit], minlength=len(candidates)).astype(np.int64)


def training_order(units: Units, held: np.ndarray, seed: int) -> np.ndarray:
    """Indices of the training units in layout order: documents in a seeded order, units in source order."""
    docs, doc_of_unit = np.unique(units.groups, return_inverse=True)
    rank = np.empty(len(docs), dtype=np.int64)
    rank[_rng(seed, 1).permutation(len(docs))] = np.arange(len(docs))
    train = np.flatnonzero(~np.isin(units.keys, held))
    return train[np.lexsort((train, rank[doc_of_unit[train]]))]


def validation_order(units: Units, held: np.ndarray) -> np.ndarray:
    """Indices of the held-out units in source order (held-out verses of a chapter stay together)."""
    return np.flatnonzero(np.isin(units.keys, held))


@dataclass
class Layout:
    """One token sequence of documents: `tokens`, with `doc_ends[j]` the end of document j (after its
    end-of-text) and `doc_chars[j]` the characters of documents 0..j (cumulative); per unit (in layout order)
    `unit_ends` (after its separator or end-of-text) and `unit_chars` (its characters plus its separator's).
    `tokens` is empty when the layout was streamed to a sink instead (lay_out's `sink`)."""

    tokens: np.ndarray  # the units' dtype (uint16 or int32)
    doc_ends: np.ndarray  # int64, cumulative
    doc_chars: np.ndarray  # int64, cumulative
    unit_ends: np.ndarray  # int64, cumulative
    unit_chars: np.ndarray  # int64, not cumulative


def lay_out(
    units: Units,
    order: np.ndarray,
    sep: int,
    eot: int,
    sep_chars: int = 1,
    sink: Callable[[np.ndarray], None] | None = None,
) -> Layout:
    """Concatenate units in `order`: a separator between units of one document, end-of-text after each
    document. A document's characters are its units' characters plus `sep_chars` per separator.

    Args:
        units: The tokenized corpus.
        order: Indices of the units to lay out, in layout order.
        sep, eot: The separator and end-of-text ids.
        sep_chars: Characters a separator stands for.
        sink: Receives the tokens chunk by chunk (about CHUNK_TOKENS each, in order) instead of one array in
            memory: what a paper-scale training sequence needs (prepare.py writes them to a token file). With
            `units.source`, units are read from the file with pread (nothing of it becomes resident); else the
            source's mapped pages are released after each chunk. Either way memory stays at a chunk's worth.
    """
    dtype = units.tokens.dtype if units.tokens.dtype.kind in "iu" else np.dtype(np.int32)
    if len(order) == 0:
        empty = np.zeros(0, np.int64)
        return Layout(np.zeros(0, dtype), empty, empty, empty, empty)
    groups = units.groups[order]
    last = np.ones(len(order), dtype=bool)
    last[:-1] = groups[1:] != groups[:-1]  # the unit ends its document
    seg = units.lengths[order] + 1  # tokens + one trailing separator or end-of-text
    ends = np.cumsum(seg)
    out = np.empty(int(ends[-1]) if sink is None else 0, dtype=dtype)
    # Gather in chunks of units so the index arrays stay small.
    lo = 0
    while lo < len(order):
        start = int(ends[lo - 1]) if lo else 0
        hi = int(np.searchsorted(ends, start + CHUNK_TOKENS, side="right"))
        hi = max(hi, lo + 1)
        stop = int(ends[hi - 1])
        chunk = out[start:stop] if sink is None else np.empty(stop - start, dtype=dtype)
        trailer = np.where(last[lo:hi], eot, sep)
        if sink is not None and units.source is not None and units.source.dtype == dtype:
            _read(units, units.source, order[lo:hi], seg[lo:hi], trailer, chunk)
        else:
            _gather(units, order[lo:hi], seg[lo:hi], trailer, chunk)
        if sink is not None:
            sink(chunk)
            release(units.tokens)
        lo = hi
    unit_chars = units.chars[order] + np.where(last, 0, sep_chars)
    doc_idx = np.flatnonzero(last)
    return Layout(
        tokens=out,
        doc_ends=ends[doc_idx].astype(np.int64),
        doc_chars=np.cumsum(unit_chars)[doc_idx],
        unit_ends=ends.astype(np.int64),
        unit_chars=unit_chars.astype(np.int64),
    )


def held_out_documents(layout: Layout, unit_keys: np.ndarray) -> dict[str, np.ndarray]:
    """The per-document index of a held-out layout: its documents are its distinct hold-out keys (a verse id
    holds the same verse in every language), so per-document losses pair up across runs and languages.

    Args:
        layout: lay_out() of the held-out units.
        unit_keys: the hold-out key of each unit, in layout order.

    Returns:
        {"keys": [J] sorted keys, "unit_doc": [units] document of each unit, "unit_ends": [units] cumulative
        token ends, "chars": [J] characters per document (separators included, so they sum to the layout's)}.
    """
    keys, unit_doc = np.unique(unit_keys, return_inverse=True)
    chars = np.bincount(unit_doc, weights=layout.unit_chars, minlength=len(keys)).astype(np.int64)
    return {"keys": keys.astype(np.int64), "unit_doc": unit_doc.astype(np.int32), "unit_ends": layout.unit_ends,
            "chars": chars}  # fmt: skip


def document_of_targets(unit_ends: np.ndarray, unit_doc: np.ndarray, n_tokens: int) -> np.ndarray:
    """For each predicted position 1..n-1 of a held-out array, the document it belongs to (int32, n - 1):
    a unit's tokens and its trailing separator are its document's."""
    unit = np.searchsorted(unit_ends, np.arange(1, n_tokens), side="right")
    return unit_doc[np.minimum(unit, len(unit_doc) - 1)].astype(np.int32)


def _gather(units: Units, order: np.ndarray, seg: np.ndarray, trailer: np.ndarray, out: np.ndarray) -> None:
    starts = np.cumsum(seg) - seg
    unit_of_pos = np.repeat(np.arange(len(order)), seg)
    within = np.arange(len(out)) - starts[unit_of_pos]
    body = within < (seg - 1)[unit_of_pos]
    src = units.offsets[order][unit_of_pos] + within
    out[body] = units.tokens[src[body]]
    out[~body] = trailer[unit_of_pos[~body]]


def _read(
    units: Units,
    source: TokenReader,
    order: np.ndarray,
    seg: np.ndarray,
    trailer: np.ndarray,
    out: np.ndarray,
) -> None:
    """_gather's result, each unit read from the token file into its place (one pread per unit)."""
    ends = np.cumsum(seg)
    for pos, first, n in zip(
        (ends - seg).tolist(), units.offsets[order].tolist(), (seg - 1).tolist(), strict=True
    ):
        if n:
            source.read_into(out[pos : pos + n], first)
    out[ends - 1] = trailer


def prefix_chars(
    doc_ends: np.ndarray, doc_chars: np.ndarray, n: int, decoded_chars: Callable[[int, int], int]
) -> int:
    """Characters behind the first `n` tokens of a layout: whole documents, plus the characters of the
    decoded prefix of the document that is cut (`decoded_chars(start, n)` decodes tokens[start:n])."""
    j = int(np.searchsorted(doc_ends, n, side="right"))  # documents entirely inside the prefix
    whole = int(doc_chars[j - 1]) if j else 0
    start = int(doc_ends[j - 1]) if j else 0
    return whole + (decoded_chars(start, n) if n > start else 0)


def check_d_f(d_f: int | None, available: int, what: str) -> int:
    """The exact training size: d_f itself, or everything when d_f is None.

    Raises:
        DataError: d_f is not positive or exceeds the training tokens available.
    """
    if d_f is None:
        return available
    if d_f <= 0:
        raise DataError(f"d_f > 0 must hold, but got d_f={d_f}")
    if d_f > available:
        raise DataError(
            f"d_f <= training tokens available must hold (training sets are exact prefixes of the non-validation "
            f"documents), but got d_f={d_f}, available={available} in {what}"
        )
    return d_f
