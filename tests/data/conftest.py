"""Shared fixtures: a token cache per test session, and small tokenizers trained once."""

from __future__ import annotations

from pathlib import Path

import pytest

from sweep_engine.spec import CorpusSpec, TokenizerSpec

EN_NT = CorpusSpec(kind="builtin", language="en", part="nt")


def write_text_corpus(path: Path, n_docs: int = 60, seed: int = 0) -> Path:
    """A .txt corpus of `n_docs` paragraphs with mixed scripts, different lengths, blank-line separated."""
    import random

    rng = random.Random(seed)
    words = ["alpha", "beta", "gamma", "Straße", "niño", "über", "天地", "起初", "the", "and", "of", "a"]
    paras = []
    for i in range(n_docs):
        n = rng.randint(3, 40)
        paras.append(f"Doc {i}: " + " ".join(rng.choice(words) for _ in range(n)) + ".")
    path.write_text("\n\n".join(paras) + "\n", encoding="utf-8")
    return path


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One cache for the session: the Bible is tokenized once for all tests that read it."""
    return tmp_path_factory.mktemp("cache")


@pytest.fixture(scope="session")
def en_tok_spec() -> TokenizerSpec:
    """A small English BPE trained on the English New Testament (fast to train)."""
    return TokenizerSpec(kind="bpe", vocab_size=1024, corpus=EN_NT)


@pytest.fixture(scope="session")
def text_corpus(tmp_path_factory: pytest.TempPathFactory) -> CorpusSpec:
    path = write_text_corpus(tmp_path_factory.mktemp("corpus") / "docs.txt", n_docs=80)
    return CorpusSpec(kind="path", language="xx", path=str(path))


@pytest.fixture(scope="session")
def text_tok_spec(text_corpus: CorpusSpec) -> TokenizerSpec:
    return TokenizerSpec(kind="bpe", vocab_size=300, corpus=text_corpus)
