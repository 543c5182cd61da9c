"""The pretraining corpus of the embedded language model, and its train / held-out split.

The default corpus is the King James Version of the Bible (1611, public domain), as shipped by Debian's
``bible-kjv-text`` package and printed by its ``bible`` program (package ``bible-kjv``)::

    apt-get install -y bible-kjv

Any plain UTF-8 text file can replace it: its documents are the paragraphs separated by blank lines.
"""

from __future__ import annotations

import random
import re
import shutil
import subprocess
from pathlib import Path

# Every verse from the first of Genesis to the last of Revelation.
KJV_COMMAND = ("bible", "Gen1:1-Rev22:21")
KJV_INSTALL = "apt-get install -y bible-kjv"

_VERSE_START = re.compile(r"^\s+\d+ ", flags=re.MULTILINE)


def parse_kjv(text: str) -> list[list[str]]:
    """Split the ``bible`` program's output into chapters, each a list of verses without their numbers.

    The program prints a header line ("Genesis 1") and a blank line before each chapter, then one verse per
    indented, numbered line, wrapped onto unindented continuation lines.
    """
    chapters = []
    for block in text.split("\n\n"):
        if not _VERSE_START.match(block):
            continue  # a chapter header
        verses = [" ".join(verse.split()) for verse in _VERSE_START.split(block)]
        chapters.append([verse for verse in verses if verse])
    if not chapters:
        raise ValueError("no verses found: expected the output of `bible Gen1:1-Rev22:21`")
    return chapters


def load_kjv() -> list[list[str]]:
    """Read the King James Bible from the installed ``bible-kjv`` Debian package, as chapters of verses."""
    if shutil.which(KJV_COMMAND[0]) is None:
        raise FileNotFoundError(
            f"the `{KJV_COMMAND[0]}` program was not found; install the corpus with `{KJV_INSTALL}` "
            "or pass a text file with --corpus-file"
        )
    result = subprocess.run(KJV_COMMAND, capture_output=True, text=True, check=True)
    return parse_kjv(result.stdout)


def read_text_file(path: str | Path) -> list[list[str]]:
    """Read a plain text file as documents (paragraphs split on blank lines), each a list of its lines."""
    text = Path(path).read_text(encoding="utf-8")
    documents = [
        [" ".join(line.split()) for line in block.splitlines() if line.strip()]
        for block in re.split(r"\n\s*\n", text)
    ]
    documents = [document for document in documents if document]
    if not documents:
        raise ValueError(f"corpus file {str(path)!r} holds no text")
    return documents


def split_documents(
    documents: list[list[str]], heldout_every: int
) -> tuple[list[list[str]], list[list[str]]]:
    """Hold out every ``heldout_every``-th document (whole chapters, so no passage is in both splits)."""
    if heldout_every < 2:
        raise ValueError(f"heldout_every must be at least 2, got {heldout_every}")
    train = [doc for i, doc in enumerate(documents) if i % heldout_every != heldout_every - 1]
    heldout = [doc for i, doc in enumerate(documents) if i % heldout_every == heldout_every - 1]
    if not train or not heldout:
        raise ValueError(
            f"{len(documents)} documents are too few to hold out every {heldout_every}-th one: "
            "give a larger corpus or a smaller heldout_every"
        )
    return train, heldout


def make_prompts(
    documents: list[list[str]], count: int, seed: int, min_words: int = 3, max_words: int = 6
) -> list[str]:
    """The first few words of ``count`` distinct sentences (verses or lines) drawn from ``documents``."""
    if count < 1:
        raise ValueError(f"count must be positive, got {count}")
    if not 1 <= min_words <= max_words:
        raise ValueError(f"need 1 <= min_words <= max_words, got {min_words} and {max_words}")
    rng = random.Random(seed)
    sentences = [sentence for document in documents for sentence in document]
    rng.shuffle(sentences)
    prompts: dict[str, None] = {}  # ordered and deduplicated
    for sentence in sentences:
        words = sentence.split()
        if len(words) > max_words:  # leave some of the sentence for the model to continue
            prompts[" ".join(words[: rng.randint(min_words, max_words)])] = None
        if len(prompts) == count:
            break
    return list(prompts)
