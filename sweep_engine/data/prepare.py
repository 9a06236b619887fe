"""A trial's token arrays, built once per content and reused by every trial and every sweep.

Three cache levels under `cache_dir`, each named by a content hash (cache.build_once makes them safe to
build from several processes at once):

    tokenizers/<tok>.json                     the tokenizer
    tokens/<corpus>-<tok>/                    every unit of a corpus tokenized once (any split, any seed)
    splits/<split>-val/, splits/<split>-test/ the held-out sets, each with its per-document index
    splits/<split>-train/                     the whole training sequence in its seeded order; a trial's D_F
                                              tokens are a prefix of it

so the first trial of a sweep tokenizes, and every later trial only reads a tokenizer and maps token files.
Token arrays are token files (tokenfile.py): written chunk by chunk, read as memory maps, their id range kept
in meta.json, so preparing and training on a corpus larger than memory keeps memory bounded.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tokenizers import Tokenizer

from sweep_engine.data import cache, corpora, subsets
from sweep_engine.data.tokenfile import TokenFileInfo, TokenReader, TokenWriter, dtype_for, open_tokens
from sweep_engine.data.tokenizer import (
    encode_documents,
    eot_id,
    load_tokenizer_with_key,
    tokenizer_key,
    tokenizer_path,
)
from sweep_engine.errors import DataError
from sweep_engine.spec import CorpusSpec, DataSpec, DocIndex, TrialData, content_hash

FORMAT = 1  # bump when a cache layout or rule changes
SPLIT_FORMAT = 3  # 2: held-out sets carry their per-document index; 3: token files (tokens.bin + id range)
StepReporter = Callable[[str], None]  # told each build step, in a few words


def _quiet(_: str) -> None:
    pass


def load_trial_data(data: DataSpec, cache_dir: Path, progress: StepReporter | None = None) -> TrialData:
    """The tokenizer's vocab size, the training prefix of exactly `data.d_f` tokens, and validation sets.

    Args:
        data: the trial's data spec.
        cache_dir: root of the data caches (shared by all trials and sweeps).
        progress: called with a short description of each build step (none on a cache hit).

    Returns:
        TrialData with memory-mapped token arrays (uint16 or int32) and their id ranges; characters behind each.

    Raises:
        DataError: a corpus cannot be read, or the sizes asked for do not fit the corpus.
    """
    cache_dir = Path(cache_dir)
    say = progress or _quiet
    tok, tok_key = load_tokenizer_with_key(data.tokenizer, cache_dir, say)
    split = Split(data.corpus, tok, tok_key, data.val_size, data.val_unit, data.split_seed, cache_dir, say,
                  data.test_size)  # fmt: skip
    val = split.held_out("val")
    test = split.held_out("test") if data.test_size else None
    seq = split.training()
    full, doc_ends, doc_chars = seq.tokens, seq.doc_ends, seq.doc_chars
    d_f = subsets.check_d_f(data.d_f, len(full), f"corpus {corpora.describe(data.corpus)}")
    train = full[:d_f]  # a view of the map: nothing is read until a batch is gathered

    def decoded_chars(start: int, stop: int) -> int:
        # A cut can split a multi-byte character: its incomplete bytes decode to U+FFFD and are not counted.
        return len(tok.decode(full[start:stop].tolist()).rstrip("\ufffd"))

    train_chars = subsets.prefix_chars(doc_ends, doc_chars, d_f, decoded_chars)
    extra: dict[str, np.ndarray] = {}
    extra_chars: dict[str, int] = {}
    # The id range of the whole sequence bounds its prefix's: the trial checks its ids without a scan.
    ranges = {"train": seq.id_range, "val": val.id_range}
    if test is not None:
        ranges["test"] = test.id_range
    for name, corpus in data.extra_val:
        # The validation keys do not depend on test_size: another language's extra set needs no test split.
        other = Split(corpus, tok, tok_key, data.val_size, data.val_unit, data.split_seed, cache_dir, say)
        held = other.held_out("val")
        extra[name], extra_chars[name], ranges[name] = held.tokens, held.chars, held.id_range
    return TrialData(
        train=train,
        val=val.tokens,
        vocab_size=tok.get_vocab_size(),
        train_chars=train_chars,
        val_chars=val.chars,
        extra_val=extra,
        extra_val_chars=extra_chars,
        test=test.tokens if test is not None else None,
        test_chars=test.chars if test is not None else 0,
        val_docs=val.docs,
        test_docs=test.docs if test is not None else None,
        id_range=ranges,
        tokenizer_file=str(tokenizer_path(cache_dir, tok_key)),
    )


@dataclass
class HeldOut:
    """A held-out set: its tokens, their characters, and which document each predicted token belongs to."""

    tokens: np.ndarray
    chars: int
    docs: DocIndex
    id_range: tuple[int, int]  # smallest and largest id, recorded when the file was written


@dataclass
class TrainingSequence:
    """The whole training sequence (memory-mapped) with its document ends and cumulative characters."""

    tokens: np.ndarray
    doc_ends: np.ndarray
    doc_chars: np.ndarray
    id_range: tuple[int, int]


def _info(meta: dict[str, object]) -> TokenFileInfo:
    return TokenFileInfo.from_json(meta)


@dataclass
class Split:
    """One corpus under one tokenizer, split by (val_size, val_unit, split_seed, test_size)."""

    corpus: CorpusSpec
    tok: Tokenizer
    tok_key: str
    val_size: int
    val_unit: str
    seed: int
    cache_dir: Path
    say: StepReporter
    test_size: int = 0

    def __post_init__(self) -> None:
        self.corpus_key = content_hash(
            {"corpus": corpora.fingerprint(self.corpus), "tok": self.tok_key, "v": FORMAT}
        )
        what = {"tokens": self.corpus_key, "size": self.val_size, "unit": self.val_unit, "seed": self.seed}
        what["split_format"] = SPLIT_FORMAT
        if self.test_size:
            what["test"] = self.test_size  # the training sequence loses the test documents too
        self.key = content_hash(what)

    def validation(self) -> tuple[np.ndarray, int]:
        """(tokens, characters) of the validation set."""
        held = self.held_out("val")
        return held.tokens, held.chars

    def held_out(self, which: str) -> HeldOut:
        """The validation ("val") or test ("test") set with its per-document index."""
        path = cache.build_once(
            self.cache_dir / "splits" / f"{self.key}-{which}", lambda out: self._build_held_out(out, which)
        )
        meta = cache.read_json(path / "meta.json")
        info = _info(meta)
        tokens = open_tokens(path / "tokens.bin", info)
        arrays = {
            k: cache.load_array(path / f"{k}.npy") for k in ("doc_keys", "unit_doc", "unit_ends", "doc_chars")
        }
        docs = DocIndex(
            keys=arrays["doc_keys"],
            of_target=subsets.document_of_targets(arrays["unit_ends"], arrays["unit_doc"], len(tokens)),
            chars=arrays["doc_chars"],
        )
        return HeldOut(tokens, int(meta["chars"]), docs, (info.min, info.max))

    def training(self) -> TrainingSequence:
        """The whole training sequence, memory-mapped."""
        path = cache.build_once(self.cache_dir / "splits" / f"{self.key}-train", self._build_train)
        info = _info(cache.read_json(path / "meta.json"))
        doc_ends, doc_chars = (cache.load_array(path / f"{n}.npy") for n in ("doc_ends", "doc_chars"))
        return TrainingSequence(
            open_tokens(path / "tokens.bin", info), doc_ends, doc_chars, (info.min, info.max)
        )

    def units(self) -> tuple[subsets.Units, np.ndarray]:
        """The tokenized corpus and its hold-out candidates (built on first use)."""
        path = cache.build_once(self.cache_dir / "tokens" / self.corpus_key, self._build_units)
        info = _info(cache.read_json(path / "meta.json"))
        tokens = open_tokens(path / "tokens.bin", info)
        arrays = {
            k: cache.load_array(path / f"{k}.npy")
            for k in ("offsets", "chars", "groups", "keys", "candidates")
        }
        reader = TokenReader(path / "tokens.bin", info) if info.tokens else None
        units = subsets.Units(
            tokens, arrays["offsets"], arrays["chars"], arrays["groups"], arrays["keys"], reader
        )
        return units, arrays["candidates"]

    def _held(self, units: subsets.Units, candidates: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(validation keys, test keys)."""
        key_tokens = subsets.tokens_per_key(units, candidates) if self.val_unit == "tokens" else None
        return subsets.choose_heldout(
            candidates, self.val_size, self.test_size, self.val_unit, self.seed, key_tokens
        )

    def _separators(self) -> tuple[int, int]:
        sep = self.tok.encode("\n", add_special_tokens=False).ids
        if len(sep) != 1:
            raise DataError(f"the tokenizer must encode a newline as one token, but it gives {sep}")
        return sep[0], eot_id(self.tok)

    def _build_held_out(self, out: Path, which: str) -> None:
        units, candidates = self.units()
        val_keys, test_keys = self._held(units, candidates)
        self.say(f"{'validation' if which == 'val' else 'test'} set of {corpora.describe(self.corpus)}")
        order = subsets.validation_order(units, val_keys if which == "val" else test_keys)
        out.mkdir()
        with TokenWriter(out / "tokens.bin", units.tokens.dtype) as writer:
            layout = subsets.lay_out(units, order, *self._separators(), sink=writer.write)
            info = writer.close()
        docs = subsets.held_out_documents(layout, units.keys[order])
        for name, key in (("doc_keys", "keys"), ("unit_doc", "unit_doc"), ("unit_ends", "unit_ends")):
            cache.save_array(out / f"{name}.npy", docs[key])
        cache.save_array(out / "doc_chars.npy", docs["chars"])
        chars = int(layout.doc_chars[-1]) if len(layout.doc_chars) else 0
        cache.write_json(out / "meta.json", {"chars": chars, "docs": len(docs["keys"]), **info.to_json()})

    def _build_train(self, out: Path) -> None:
        units, candidates = self.units()
        self.say(f"training sequence of {corpora.describe(self.corpus)}")
        order = subsets.training_order(units, np.concatenate(self._held(units, candidates)), self.seed)
        out.mkdir()
        with TokenWriter(out / "tokens.bin", units.tokens.dtype) as writer:
            layout = subsets.lay_out(units, order, *self._separators(), sink=writer.write)
            info = writer.close()
        cache.save_array(out / "doc_ends.npy", layout.doc_ends)
        cache.save_array(out / "doc_chars.npy", layout.doc_chars)
        cache.write_json(out / "meta.json", info.to_json())

    def _build_units(self, out: Path) -> None:
        self.say(f"tokenizing {corpora.describe(self.corpus)}")
        batches = corpora.iter_unit_batches(self.corpus)
        encoded = (EncodedBatch(*encode_documents(self.tok, b.texts), _chars(b.texts), b.groups, b.keys)
                   for b in batches)  # fmt: skip
        write_units(out, encoded, dtype_for(self.tok.get_vocab_size()), corpora.describe(self.corpus))
        keys = cache.load_array(out / "keys.npy")
        cache.save_array(out / "candidates.npy", corpora.holdout_candidates(self.corpus, keys))


def _chars(texts: list[str]) -> np.ndarray:
    return np.fromiter(map(len, texts), dtype=np.int64, count=len(texts))


@dataclass
class EncodedBatch:
    """Consecutive units of a corpus, tokenized: ids of all of them concatenated, and per unit its token
    count, characters, document (group) and hold-out key."""

    ids: np.ndarray
    lengths: np.ndarray
    chars: np.ndarray
    groups: np.ndarray
    keys: np.ndarray


def write_units(out: Path, batches: Iterable[EncodedBatch], dtype: np.dtype[Any], what: str) -> None:
    """Write a tokenized corpus (a `tokens/` cache entry, without its hold-out candidates) into the new
    directory `out`: the ids go to a token file batch by batch; only per-unit arrays stay in memory.

    Raises:
        DataError: the corpus has no text.
    """
    out.mkdir()
    lengths, chars, groups, keys = [], [], [], []
    with TokenWriter(out / "tokens.bin", dtype) as writer:
        for batch in batches:
            writer.write(batch.ids)
            lengths.append(batch.lengths)
            chars.append(batch.chars)
            groups.append(batch.groups)
            keys.append(batch.keys)
        info = writer.close()
    if not lengths:
        raise DataError(f"corpus {what} has no text")
    offsets = np.concatenate([[0], np.cumsum(np.concatenate(lengths))]).astype(np.int64)
    all_chars = np.concatenate(chars)
    cache.save_array(out / "offsets.npy", offsets)
    cache.save_array(out / "chars.npy", all_chars)
    cache.save_array(out / "groups.npy", np.concatenate(groups))
    cache.save_array(out / "keys.npy", np.concatenate(keys))
    cache.write_json(
        out / "meta.json", {**info.to_json(), "chars": int(all_chars.sum()), "units": int(len(all_chars))}
    )


def corpus_token_stats(corpus: CorpusSpec, tok: Tokenizer, tok_key: str, cache_dir: Path) -> tuple[int, int]:
    """(tokens, characters) of a whole corpus under a tokenizer, from the token cache (built if needed)."""
    split = Split(corpus, tok, tok_key, 1, "docs", 0, Path(cache_dir), _quiet)
    path = cache.build_once(split.cache_dir / "tokens" / split.corpus_key, split._build_units)
    meta = cache.read_json(path / "meta.json")
    return int(meta["tokens"]), int(meta["chars"])


@dataclass(frozen=True)
class TokenReport:
    """Tokens per character of one corpus under one tokenizer."""

    tokenizer: str  # the tokenizer's cache key
    corpus: str
    language: str
    tokens: int
    chars: int

    @property
    def tokens_per_char(self) -> float:
        return self.tokens / self.chars


def prepare_data(
    data_specs: list[DataSpec], cache_dir: Path, progress: Callable[[int, int, str], None] | None = None
) -> list[TokenReport]:
    """Build every tokenizer and cache the given trials need, so that training starts at once.

    Args:
        data_specs: the trials' data specs (duplicates are built once).
        cache_dir: root of the data caches.
        progress: called as progress(done, total, message).

    Returns:
        Tokens per character of every corpus (training and extra validation) under each tokenizer used.
    """
    unique = list(dict.fromkeys(data_specs))
    # Check every corpus and tokenizer first: an unreachable one fails before anything is built.
    corpus_set: dict[CorpusSpec, None] = {}
    for d in unique:
        corpus_set.update(dict.fromkeys([d.corpus, *(c for _, c in d.extra_val)]))
        if d.tokenizer.corpus is not None:
            corpus_set[d.tokenizer.corpus] = None
    for c in corpus_set:
        corpora.check_corpus(c)
    for d in unique:
        tokenizer_key(d.tokenizer)

    def report(done: int, msg: str) -> None:
        if progress is not None:
            progress(done, len(unique), msg)

    seen: dict[tuple[str, CorpusSpec], TokenReport] = {}
    for i, d in enumerate(unique):
        report(i, f"{corpora.describe(d.corpus)}, d_f={d.d_f}")
        load_trial_data(d, cache_dir, progress=functools.partial(report, i))
        tok, tok_key = load_tokenizer_with_key(d.tokenizer, cache_dir)
        for c in [d.corpus, *(c for _, c in d.extra_val)]:
            if (tok_key, c) not in seen:
                n_tok, n_chars = corpus_token_stats(c, tok, tok_key, cache_dir)
                seen[tok_key, c] = TokenReport(tok_key, corpora.describe(c), c.language, n_tok, n_chars)
    report(len(unique), "done")
    return list(seen.values())
