"""Tokenizing throughput of the data pipeline against a bare `tokenizers` encode_batch, and cache load times.

    .venv/bin/python benchmarks/tokenize_throughput.py [--lang en] [--repeats 3]

Both sides tokenize the same text (the whole Bible of one language) with the same 4096-token byte-level BPE,
trained on the English Old Testament. The pipeline side is what a first trial pays: the corpus's verses in
batches -> encode -> flat token file + offsets on disk (the text is read once beforehand, so both sides start
from strings in memory). The bare side is one `Tokenizer.encode_batch` call over all the verses, the ids left
inside the Encoding objects. Runs alternate and the best of `--repeats` is kept, so a busy machine hurts both
alike; CPU time (all threads) is printed beside wall time because it is less sensitive to other processes.
Goal: ratio >= 0.8. Then the time of load_trial_data on a cache hit (what every later trial pays).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from sweep_engine.data import load_tokenizer, load_trial_data
from sweep_engine.data.corpora import iter_unit_batches
from sweep_engine.data.prepare import Split
from sweep_engine.spec import CorpusSpec, DataSpec, TokenizerSpec


@contextlib.contextmanager
def _timer(out: list[tuple[float, float]]) -> Iterator[None]:
    """Append (wall seconds, CPU seconds of all this process's threads) of the block to `out`."""
    wall, cpu = time.perf_counter(), time.process_time()
    yield
    out.append((time.perf_counter() - wall, time.process_time() - cpu))


def _best(runs: list[tuple[float, float]]) -> tuple[float, float]:
    # The least disturbed run of each kind: other processes on the machine only ever add time.
    return min(w for w, _ in runs), min(c for _, c in runs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--lang", default="en", choices=["en", "es", "de", "zh"])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None, help="encoder threads (default: all cores)")
    args = parser.parse_args()
    if args.threads:
        os.environ["RAYON_NUM_THREADS"] = str(args.threads)  # read when the encoder's pool first starts

    with tempfile.TemporaryDirectory() as tmp:
        cache_dir = Path(tmp)
        tok_spec = TokenizerSpec(kind="bpe", vocab_size=4096, corpus=CorpusSpec("builtin", "en", part="ot"))
        tok = load_tokenizer(tok_spec, cache_dir)
        corpus = CorpusSpec("builtin", args.lang, part="all")
        texts = [t for b in iter_unit_batches(corpus) for t in b.texts]  # warms the per-process text cache
        chars = sum(map(len, texts))

        bare: list[tuple[float, float]] = []
        pipe: list[tuple[float, float]] = []
        n_tokens = 0
        for r in range(args.repeats):
            with _timer(bare):
                encodings = tok.encode_batch(texts)
            n_tokens = sum(len(e) for e in encodings)
            del encodings

            split = Split(corpus, tok, f"bench{r}", 1, "docs", 0, cache_dir, lambda _: None)
            with _timer(pipe):
                split._build_units(cache_dir / f"units{r}")

        (w_bare, c_bare), (w_pipe, c_pipe) = _best(bare), _best(pipe)
        threads = os.environ.get("RAYON_NUM_THREADS", f"all {os.cpu_count()}")
        print(f"encoder threads: {threads}")
        print(f"text: bible {args.lang}, {len(texts):,} verses, {chars:,} chars, {n_tokens:,} tokens")
        print(
            f"bare encode_batch : wall {w_bare:6.3f} s ({n_tokens / w_bare / 1e6:5.2f} M tokens/s), cpu {c_bare:6.3f} s"
        )
        print(
            f"pipeline          : wall {w_pipe:6.3f} s ({n_tokens / w_pipe / 1e6:5.2f} M tokens/s), cpu {c_pipe:6.3f} s"
        )
        print(
            f"ratio pipeline/bare throughput: wall {w_bare / w_pipe:.2f}, cpu {c_bare / c_pipe:.2f}  (goal >= 0.8)"
        )

        data = DataSpec(
            corpus=CorpusSpec("builtin", args.lang, part="nt"), tokenizer=tok_spec, d_f=64_000, val_size=1000
        )
        start = time.perf_counter()
        load_trial_data(data, cache_dir)
        first = time.perf_counter() - start
        hits = []
        for _ in range(args.repeats):
            start = time.perf_counter()
            load_trial_data(data, cache_dir)
            hits.append(time.perf_counter() - start)
        print(
            f"load_trial_data (bible {args.lang} nt, d_f=64000): first {first:.2f} s, second {min(hits) * 1e3:.1f} ms"
        )


if __name__ == "__main__":
    main()
