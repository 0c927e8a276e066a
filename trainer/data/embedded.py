"""The embedded default corpus: eight Shakespeare plays shipped gzip-compressed in the package."""

from __future__ import annotations

import gzip
import re
from pathlib import Path

CORPUS_DIR = Path(__file__).parent / "corpus"
SHAKESPEARE_FILE = CORPUS_DIR / "shakespeare8.txt.gz"
SHAKESPEARE_PLAYS = (
    "hamlet",
    "macbeth",
    "romeo_and_juliet",
    "julius_caesar",
    "lear",
    "othello",
    "tempest",
    "midsummer_nights_dream",
)
EMBEDDED_SOURCES = {"embedded:shakespeare": SHAKESPEARE_FILE}

# Every play opens with its title line followed by "by William Shakespeare"; plays are joined
# by one blank line, so a boundary is the blank line right before such a title.
_PLAY_START = re.compile(r"\n\n(?=[^\n]+\n\nby William Shakespeare\n)")


def split_plays(text: str) -> list[str]:
    """Split the joined corpus text back into one string per play."""
    return [p.strip() for p in _PLAY_START.split(text.strip())]


def load_embedded_documents(source: str) -> list[str]:
    """Documents of an embedded corpus ("embedded:shakespeare": one document per play)."""
    path = EMBEDDED_SOURCES.get(source)
    if path is None:
        known = ", ".join(sorted(EMBEDDED_SOURCES))
        raise ValueError(f"unknown embedded corpus {source!r}; known: {known}")
    if not path.is_file():
        raise FileNotFoundError(
            f"embedded corpus file missing: {path}; regenerate it with scripts/make_corpus.py"
        )
    with gzip.open(path, "rt", encoding="utf-8") as f:
        plays = split_plays(f.read())
    if len(plays) != len(SHAKESPEARE_PLAYS):
        raise ValueError(
            f"{path}: expected {len(SHAKESPEARE_PLAYS)} plays, found {len(plays)}; "
            "regenerate it with scripts/make_corpus.py"
        )
    return plays
