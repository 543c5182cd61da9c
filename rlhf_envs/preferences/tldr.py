"""The Reddit TL;DR summarization task of the lecture (Stiennon et al., 2020), in TRL's columns.

A post becomes the prompt ``SUBREDDIT: r/<subreddit>\\nTITLE: <title>\\nPOST: <post>\\nTL;DR:``.
:func:`load_tldr` reads either a dataset of posts (fields ``subreddit``, ``title``, ``post`` and
optionally a reference ``summary``, at the top level or under ``info`` as in OpenAI's
``summarize_from_feedback``) or one of comparisons in that layout (``info`` with the post's fields,
two ``summaries`` with a ``text`` each and the index of the preferred one in ``choice``), or TRL's
``prompt``/``chosen``/``rejected`` comparisons, by ``datasets`` name or from a local JSON/JSONL file.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from datasets import Dataset, load_dataset

from rlhf_envs.preferences.trl_formats import to_text_preference

__all__ = ["format_tldr_prompt", "load_tldr"]

POST_FIELDS = ("subreddit", "title", "post")


def format_tldr_prompt(subreddit: str, title: str, post: str) -> str:
    """The prompt of Stiennon et al.; the summary follows ``TL;DR:`` after a space."""
    subreddit = subreddit if subreddit.startswith("r/") else f"r/{subreddit}"
    return f"SUBREDDIT: {subreddit}\nTITLE: {title.strip()}\nPOST: {post.strip()}\nTL;DR:"


def _post_prompt(fields: dict[str, Any], where: str) -> str:
    missing = [name for name in POST_FIELDS if not isinstance(fields.get(name), str)]
    if missing:
        raise ValueError(
            f"{where}: missing or non-string field(s) {missing}; a TL;DR post has {list(POST_FIELDS)}"
        )
    return format_tldr_prompt(fields["subreddit"], fields["title"], fields["post"])


def _convert(row: dict[str, Any], index: int) -> dict[str, str]:
    where = f"row {index}"
    if row.get("summaries") is not None:  # a comparison
        summaries, choice = row["summaries"], row.get("choice")
        if len(summaries) != 2 or choice not in (0, 1):
            raise ValueError(f"{where}: a comparison has two 'summaries' and 'choice' 0 or 1")
        texts = [" " + summary["text"].strip() for summary in summaries]
        return {
            "prompt": _post_prompt(row.get("info") or {}, where),
            "chosen": texts[choice],
            "rejected": texts[1 - choice],
        }
    if row.get("chosen") is not None or row.get("rejected") is not None:  # TRL's comparison
        try:
            return to_text_preference(row)
        except ValueError as error:
            raise ValueError(f"{where}: {error}") from error
    if isinstance(row.get("prompt"), str):  # TRL's prompt-only row
        return {"prompt": row["prompt"]}
    post = row.get("info") or row  # summarize_from_feedback nests the post under "info"
    converted = {"prompt": _post_prompt(post, where)}
    summary = row.get("summary")
    summary = summary.get("text") if isinstance(summary, dict) else summary
    if isinstance(summary, str):
        converted["summary"] = " " + summary.strip()
    return converted


def load_tldr(source: str | Path, split: str = "train", limit: int | None = None) -> Dataset:
    """TL;DR posts (columns ``prompt`` and, when given, ``summary``) or comparisons (``prompt``,
    ``chosen``, ``rejected``); TRL's rows (``prompt`` alone, or with ``chosen`` and ``rejected``) are
    taken as they are.

    Args:
        source: a local ``.json``/``.jsonl`` file, or a dataset name for ``datasets.load_dataset``.
        split: the split to read from a named dataset.
        limit: keep only the first rows.
    """
    path = Path(source)
    if path.is_file():
        raw = load_dataset("json", data_files=str(path), split="train")
    elif path.suffix in (".json", ".jsonl"):
        raise ValueError(f"TL;DR file {path} does not exist")
    else:
        raw = load_dataset(str(source), split=split)
    if limit is not None:
        raw = raw.select(range(min(limit, len(raw))))
    rows = [_convert(row, index) for index, row in enumerate(raw)]
    if not rows:
        raise ValueError(f"{source} holds no rows")
    return Dataset.from_list(rows)
