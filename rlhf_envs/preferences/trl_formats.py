"""Preference data in any of TRL's forms, read into ours: ``prompt``, ``chosen``, ``rejected`` strings.

TRL's preference datasets come in three forms, all of which a reward model is trained on the same way:

- explicit prompt: ``{"prompt": str, "chosen": str, "rejected": str}`` (our own form);
- implicit prompt: ``{"chosen": str, "rejected": str}``, both holding the whole text; the prompt is
  their longest common beginning (as TRL's ``extract_prompt``: a space before the first difference
  stays with the completions);
- conversational: the same two forms with lists of ``{"role", "content"}`` messages instead of
  strings; the prompt is the shared first messages, rendered with the tokenizer's chat template
  (with the generation prompt) and each completion is the rest of its rendered conversation.

An optional ``margin`` column (how much better chosen is, TRL's margin) is kept as a float column.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from datasets import Dataset, DatasetDict, load_dataset
from transformers import PreTrainedTokenizerBase

from rlhf_envs.preferences.store import JsonlStore

__all__ = ["load_trl_preferences", "to_text_preference"]

MARGIN = "margin"
Message = Mapping[str, Any]
_FILE_FORMATS = {".json": "json", ".jsonl": "json", ".parquet": "parquet", ".csv": "csv"}


def _is_conversation(value: Any) -> bool:
    return (
        isinstance(value, Sequence)
        and not isinstance(value, str)
        and all(
            isinstance(message, Mapping) and "role" in message and "content" in message for message in value
        )
    )


def _common_prefix_length(chosen: Sequence, rejected: Sequence) -> int:
    """Length of the shared beginning of ``chosen`` and ``rejected`` (characters or messages)."""
    length = 0
    for a, b in zip(chosen, rejected, strict=False):
        if a != b:
            break
        length += 1
    if length == min(len(chosen), len(rejected)):
        raise ValueError("one of chosen and rejected is the beginning of the other: no completion to compare")
    # TRL keeps the space before the first difference with the completions (" good" vs " bad").
    if isinstance(chosen, str) and length > 0 and chosen[length - 1] == " ":
        length -= 1
    return length


def _render(tokenizer: PreTrainedTokenizerBase | None, messages: list, generation_prompt: bool) -> str:
    if tokenizer is None or not getattr(tokenizer, "chat_template", None):
        raise ValueError(
            "conversational preferences need a tokenizer with a chat template to turn messages into text; "
            "pass tokenizer= (one whose chat_template is set)"
        )
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=generation_prompt)


def to_text_preference(
    example: Mapping[str, Any], tokenizer: PreTrainedTokenizerBase | None = None
) -> dict[str, Any]:
    """One example of any TRL preference form as ``{"prompt", "chosen", "rejected"}`` strings
    (plus ``"margin"`` when the example has one); raises ``ValueError`` naming what is wrong."""
    missing = [key for key in ("chosen", "rejected") if example.get(key) is None]
    if missing:
        raise ValueError(f"missing field(s) {missing}; a preference has chosen and rejected (and a prompt)")
    chosen, rejected, prompt = example["chosen"], example["rejected"], example.get("prompt")
    if _is_conversation(chosen) and _is_conversation(rejected):
        chosen, rejected = list(chosen), list(rejected)
        if prompt is None:
            length = _common_prefix_length(chosen, rejected)
            prompt, chosen, rejected = chosen[:length], chosen[length:], rejected[length:]
        elif not _is_conversation(prompt):
            raise ValueError("a conversational preference needs its prompt as a list of messages too")
        prompt_text = _render(tokenizer, list(prompt), generation_prompt=True)
        texts = [_render(tokenizer, list(prompt) + completion, False) for completion in (chosen, rejected)]
        if not all(text.startswith(prompt_text) for text in texts):
            raise ValueError("the chat template renders the prompt differently inside the conversation")
        record = {"prompt": prompt_text, "chosen": texts[0][len(prompt_text) :]}
        record["rejected"] = texts[1][len(prompt_text) :]
    elif isinstance(chosen, str) and isinstance(rejected, str):
        if prompt is None:
            length = _common_prefix_length(chosen, rejected)
            prompt, chosen, rejected = chosen[:length], chosen[length:], rejected[length:]
        elif not isinstance(prompt, str):
            raise ValueError(
                f"'prompt' must be a string like chosen and rejected, got {type(prompt).__name__}"
            )
        record = {"prompt": prompt, "chosen": chosen, "rejected": rejected}
    else:
        raise ValueError(
            "chosen and rejected must both be strings or both be lists of {'role', 'content'} messages, got "
            f"{type(chosen).__name__} and {type(rejected).__name__}"
        )
    if MARGIN in example and example[MARGIN] is not None:
        margin = example[MARGIN]
        if isinstance(margin, bool) or not isinstance(margin, int | float):
            raise ValueError(f"'margin' must be a number, got {margin!r}")
        record[MARGIN] = float(margin)
    return record


def _read(source: str | os.PathLike | Dataset | DatasetDict, split: str) -> Dataset | list[dict[str, Any]]:
    if isinstance(source, DatasetDict):
        if split not in source:
            raise ValueError(f"the dataset has splits {list(source)}, not {split!r}")
        return source[split]
    if isinstance(source, Dataset):
        return source
    path = Path(source)
    if path.is_file():
        if path.suffix == ".jsonl":
            # Our own stores and TRL's JSONL files: a bad line is named by its number.
            return JsonlStore(path).records
        if path.suffix not in _FILE_FORMATS:
            raise ValueError(f"{path}: preference files are {sorted(_FILE_FORMATS)}, not {path.suffix!r}")
        return load_dataset(_FILE_FORMATS[path.suffix], data_files=str(path), split="train")
    if path.suffix in _FILE_FORMATS or path.is_absolute() or str(source).startswith("."):
        raise ValueError(f"preference file {path} does not exist")
    return load_dataset(str(source), split=split)  # a dataset name on the Hub or in the local cache


def load_trl_preferences(
    source: str | os.PathLike | Dataset | DatasetDict,
    tokenizer: PreTrainedTokenizerBase | None = None,
    split: str = "train",
) -> Dataset:
    """Comparisons in any TRL preference form as a ``Dataset`` of ``prompt``, ``chosen``, ``rejected``
    strings (and ``margin`` when the source has one).

    Args:
        source: a ``datasets.Dataset`` or ``DatasetDict``, a file (``.jsonl``, ``.json``, ``.parquet``,
            ``.csv``), or a dataset name for ``datasets.load_dataset``.
        tokenizer: renders conversational examples with its chat template.
        split: the split of a ``DatasetDict`` or a named dataset.
    """
    rows = _read(source, split)
    name = f"the {type(source).__name__}" if isinstance(source, Dataset | DatasetDict) else repr(str(source))
    records = []
    for index, example in enumerate(rows):
        try:
            records.append(to_text_preference(example, tokenizer))
        except ValueError as error:
            raise ValueError(f"preference {index} of {name}: {error}") from error
    if not records:
        raise ValueError(f"{name} holds no preferences")
    has_margin = [MARGIN in record for record in records]
    if any(has_margin) and not all(has_margin):
        raise ValueError(f"{name}: some preferences have a margin and some do not")
    return Dataset.from_list(records)
