"""Peak memory of preparing and training on corpora larger than a memory limit: one line per corpus size.

Each size runs in a fresh process that, after its imports, resets its peak-RSS counter (/proc/self/clear_refs)
and caps its private memory with RLIMIT_DATA at what it already uses plus `--limit-mb` (a corpus converted to
an in-memory array would fail with MemoryError). It then prepares the corpus (the token cache, the held-out
sets, the whole training sequence), loads the trial's data and trains a small model for a few steps on it, and
reports its peak RSS (VmHWM: everything resident, mapped file pages included) next to the corpus's size.

Two ways to make the corpus:
- default: the token cache is written from synthetic ids through the same writer the tokenizer feeds
  (prepare.write_units), so the sizes can be far larger than tokenizing allows in a test (~0.7M tokens/s here);
  everything after tokenization is the real path;
- `--text`: a JSONL text corpus tokenized by a real BPE (prepare_data end to end); sizes in tokens are then
  approximate (about 0.2 tokens per character for its text).

    .venv/bin/python benchmarks/memory_bound.py                      # 4 sizes, synthetic ids
    .venv/bin/python benchmarks/memory_bound.py --text --tokens 2e6 8e6
    .venv/bin/python benchmarks/memory_bound.py --ci                 # the test's 2 sizes, JSON lines
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

DOC_TOKENS = 800  # tokens per synthetic document
VOCAB = 300


def _status() -> dict[str, int]:
    """KiB figures of /proc/self/status (VmHWM, VmRSS, VmData, RssAnon, RssFile)."""
    out = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmHWM", "VmRSS", "VmData", "RssAnon", "RssFile"):
            out[key] = int(value.split()[0])
    return out


def _synthetic_units(n_tokens: int, vocab: int, seed: int = 0) -> Any:
    """EncodedBatches of ~1M tokens: documents of DOC_TOKENS random ids below `vocab`."""
    from sweep_engine.data.prepare import EncodedBatch

    rng = np.random.default_rng(seed)
    docs_per_batch = (1 << 20) // DOC_TOKENS
    n_docs = max(4, n_tokens // DOC_TOKENS)
    for first in range(0, n_docs, docs_per_batch):
        k = min(docs_per_batch, n_docs - first)
        lengths = np.full(k, DOC_TOKENS, dtype=np.int64)
        ids = rng.integers(0, vocab, size=k * DOC_TOKENS, dtype=np.int64)
        index = np.arange(first, first + k, dtype=np.int64)
        yield EncodedBatch(ids, lengths, lengths * 4, index, index)


def _text_corpus(path: Path, n_tokens: int) -> None:
    """About n_tokens tokens of text (the word list below gives ~0.2 tokens per character), as JSONL."""
    rng = np.random.default_rng(0)
    words = np.array(["alpha", "beta", "gamma", "delta", "the", "and", "of", "zeta", "omega", "kappa"])
    chars, n = int(n_tokens / 0.2), 0
    with path.open("w") as f:
        while n < chars:
            text = " ".join(words[rng.integers(0, len(words), 600)])
            f.write(json.dumps({"text": text}) + "\n")
            n += len(text)


def probe(n_tokens: int, limit_mb: int, workdir: Path, text: bool) -> dict[str, Any]:
    """In this process: cap memory, prepare and train on a corpus of ~n_tokens tokens, report the peaks."""
    import torch

    from sweep_engine.data import cache as cache_mod
    from sweep_engine.data import load_trial_data, prepare_data
    from sweep_engine.data.prepare import Split, write_units
    from sweep_engine.data.tokenfile import dtype_for
    from sweep_engine.data.tokenizer import load_tokenizer_with_key
    from sweep_engine.spec import (
        CorpusSpec,
        DataSpec,
        ListReporter,
        ScheduleSpec,
        StoppingSpec,
        TokenizerSpec,
        TrialSpec,
    )
    from sweep_engine.training.loop import run_trial
    from sweep_engine.training.model import SIZES

    torch.set_num_threads(1)
    seed_text = workdir / "seed.jsonl"  # what the tokenizer is trained on (and, with --text, the corpus)
    _text_corpus(seed_text, 20_000 if not text else n_tokens)
    corpus = CorpusSpec(kind="path", language="xx", path=str(seed_text))
    tok_spec = TokenizerSpec(kind="bpe", vocab_size=VOCAB, corpus=corpus)
    cache_dir = workdir / "cache"
    tok, tok_key = load_tokenizer_with_key(tok_spec, cache_dir)
    data = DataSpec(corpus=corpus, tokenizer=tok_spec, d_f=None, val_size=20_000, val_unit="tokens",
                    test_size=20_000)  # fmt: skip

    # The measurement starts here: peak RSS reset, private memory capped.
    Path("/proc/self/clear_refs").write_text("5")
    base = _status()
    limit = base["VmData"] * 1024 + limit_mb * 2**20
    resource.setrlimit(resource.RLIMIT_DATA, (limit, limit))
    start = time.perf_counter()
    if text:
        prepare_data([data], cache_dir)
    else:
        split = Split(corpus, tok, tok_key, data.val_size, data.val_unit, data.split_seed, cache_dir,
                      lambda _: None, data.test_size)  # fmt: skip

        def seed_units(out: Path) -> None:
            write_units(out, _synthetic_units(n_tokens, tok.get_vocab_size()), dtype_for(VOCAB), "synthetic")
            keys = cache_mod.load_array(out / "keys.npy")
            cache_mod.save_array(out / "candidates.npy", np.unique(keys))

        cache_mod.build_once(cache_dir / "tokens" / split.corpus_key, seed_units)
        load_trial_data(data, cache_dir)  # builds the held-out sets and the training sequence
    prepared = _status()
    td = load_trial_data(data, cache_dir)
    spec = TrialSpec(
        sweep="memory", stage="pretrain", language="xx", init="scratch", model=SIZES["xs"], data=data,
        context=64, batch_tokens=2048, lr=1e-3, schedule=ScheduleSpec(kind="constant"),
        stopping=StoppingSpec(eval_interval_tokens=20 * 2048, token_cap=20 * 2048, patience=5),
    )  # fmt: skip
    result = run_trial(spec, ListReporter(), workdir=workdir / "trial", data=td)
    end = _status()
    seconds = time.perf_counter() - start
    token_bytes = len(td.train) * td.train.dtype.itemsize
    return {
        "tokens": int(len(td.train)),
        "token_file_mb": round(token_bytes / 2**20, 1),
        "as_int64_mb": round(len(td.train) * 8 / 2**20, 1),
        "limit_mb": limit_mb,
        "baseline_rss_mb": round(base["VmRSS"] / 1024, 1),
        "peak_rss_mb": round(end["VmHWM"] / 1024, 1),
        "peak_over_baseline_mb": round((end["VmHWM"] - base["VmRSS"]) / 1024, 1),
        "rss_after_prepare_mb": round(prepared["VmRSS"] / 1024, 1),
        "trained_steps": result.steps,
        "seconds": round(seconds, 1),
        "tokenized": text,
    }


def run_one(n_tokens: int, limit_mb: int, text: bool) -> dict[str, Any]:
    """`probe` in a fresh process (the limit and the peak are per process)."""
    with tempfile.TemporaryDirectory(prefix="memory-bound-") as tmp:
        cmd = [sys.executable, __file__, "--child", str(n_tokens), "--limit-mb", str(limit_mb), "--dir", tmp]
        done = subprocess.run(cmd + (["--text"] if text else []), capture_output=True, text=True, check=False)
        if done.returncode:
            raise SystemExit(f"the probe of {n_tokens:,} tokens failed:\n{done.stderr[-3000:]}")
        return dict(json.loads(done.stdout.strip().splitlines()[-1]))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--tokens", type=float, nargs="*", default=[4e6, 16e6, 64e6, 128e6])
    parser.add_argument("--limit-mb", type=int, default=96)
    parser.add_argument("--text", action="store_true", help="tokenize a real text corpus (slower)")
    parser.add_argument("--ci", action="store_true", help="the test's sizes: one JSON line per size")
    parser.add_argument("--child", type=float, help=argparse.SUPPRESS)
    parser.add_argument("--dir", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child is not None:
        print(json.dumps(probe(int(args.child), args.limit_mb, args.dir, args.text)))
        return
    if args.ci:
        for n in (8_000_000, 64_000_000):
            print(json.dumps(run_one(n, args.limit_mb, False)), flush=True)
        return
    print(f"memory limit: RLIMIT_DATA = the process's private memory after imports + {args.limit_mb} MiB")
    header = (
        f"{'tokens':>12} {'token file':>11} {'as int64':>10} {'peak RSS':>9} {'over base':>10} {'time':>7}"
    )
    print(header)
    for n in args.tokens:
        r = run_one(int(n), args.limit_mb, args.text)
        print(
            f"{r['tokens']:>12,} {r['token_file_mb']:>8.1f} MB {r['as_int64_mb']:>7.1f} MB "
            f"{r['peak_rss_mb']:>6.1f} MB {r['peak_over_baseline_mb']:>7.1f} MB {r['seconds']:>6.1f}s"
        )


if __name__ == "__main__":
    main()
