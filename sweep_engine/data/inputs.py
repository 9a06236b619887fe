"""Every input a space names, checked before a launch starts Ray, each problem named by its field.

`launch` runs this before anything else: a missing corpus file, an unreachable Hugging Face dataset or a missing
tokenizer file exits 2 with `<space file>: <dotted.field>: <rule>` instead of starting Ray, training the
pre-training and then failing every transfer trial. It reads at most the first document of each corpus.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from sweep_engine.config import CorpusConfig, Space
from sweep_engine.data.corpora import check_corpus
from sweep_engine.errors import DataError
from sweep_engine.space import corpus_spec


def named_corpora(space: Space) -> Iterator[tuple[str, str, CorpusConfig]]:
    """(dotted field, language, corpus) of every corpus the space reads."""
    if space.pretrain is not None:
        # A stage taken over by `pretrain_from` is named as this space's field: that is where it was merged.
        yield "pretrain.corpus", space.pretrain.language, space.pretrain.corpus
    if space.tokenizer.corpus is not None and space.pretrain is not None:
        yield "tokenizer.corpus", space.pretrain.language, space.tokenizer.corpus
    if space.transfer is not None:
        for code, lang in space.transfer.languages.items():
            yield f"transfer.languages.{code}.corpus", code, lang.corpus
        for name, corpus in space.transfer.extra_val.items():
            if isinstance(corpus, CorpusConfig):  # "pretrain": the pre-training corpus, named above
                yield f"transfer.extra_val.{name}", name, corpus


def input_problems(space: Space) -> list[str]:
    """One `dotted.field: rule` line per input that cannot be read (empty when all can)."""
    problems: list[str] = []
    seen: set[object] = set()
    for field, language, corpus in named_corpora(space):
        spec = corpus_spec(corpus, language)
        if spec in seen:
            continue
        seen.add(spec)
        try:
            check_corpus(spec)
        except DataError as exc:
            problems.append(f"{field}.{corpus.kind}: must name a readable corpus: {exc}")
    if space.tokenizer.kind == "files":
        for key in ("vocab_file", "merges_file"):
            value = getattr(space.tokenizer, key)
            if value and not Path(value).is_file():
                problems.append(f"tokenizer.{key}: must be an existing file, got {value!r}")
    return problems


def check_inputs(space: Space) -> None:
    """Raise one DataError listing every input of `space` that cannot be read, each line naming the file and
    the field (what `exits.on_bad_input` prints as `error:` lines)."""
    problems = input_problems(space)
    if problems:
        source = space.source or Path(space.name)
        raise DataError("\n".join(f"{source}: {p}" for p in problems))
