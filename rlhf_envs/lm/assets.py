"""The embedded assets, owned here alone: the default language model, its reward model and prompts.

Every other module takes these paths (and :func:`load_prompts`) from here, so moving or replacing an
embedded model is a change to this file only. The default is the Brown model (modern American
English, context 256); the King James model it replaced stays as an option (``model=KJV_LM_DIR``).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

LM_DIR = Path(__file__).resolve().parent

#: Folder of the embedded default language model, a GPT-2 pretrained on the Brown corpus
#: (``save_pretrained`` layout, tokenizer included).
EMBEDDED_LM_DIR = LM_DIR / "brown"
#: Folder of the embedded text reward model (a sequence classifier with one label).
EMBEDDED_REWARD_MODEL_DIR = LM_DIR / "reward_model"
#: Held-out prompts of the embedded language model (the first words of held-out Brown sentences).
DEFAULT_PROMPTS_FILE = LM_DIR / "data" / "brown_prompts.txt"
#: The demo's prompts: held-out Brown sentences cut right before an adjective ("The food was"), so that a
#: continuation usually says how something was (see :func:`rlhf_envs.lm.corpus.make_evaluative_prompts`).
EVALUATIVE_PROMPTS_FILE = LM_DIR / "data" / "brown_evaluative_prompts.txt"
#: The same rule on the pretraining split's texts, less any prompt also in the held-out file: the prompts of
#: the embedded reward model's own training labels, so that none of the demo's prompts is among them.
TRAIN_EVALUATIVE_PROMPTS_FILE = LM_DIR / "data" / "brown_train_evaluative_prompts.txt"
#: The King James Bible model that was the default before the Brown model, and its held-out prompts.
KJV_LM_DIR = LM_DIR / "kjv"
KJV_PROMPTS_FILE = LM_DIR / "data" / "kjv_prompts.txt"

__all__ = [
    "DEFAULT_PROMPTS_FILE",
    "EMBEDDED_LM_DIR",
    "EMBEDDED_REWARD_MODEL_DIR",
    "EVALUATIVE_PROMPTS_FILE",
    "KJV_LM_DIR",
    "KJV_PROMPTS_FILE",
    "LM_DIR",
    "TRAIN_EVALUATIVE_PROMPTS_FILE",
    "load_prompts",
]


def load_prompts(prompts: Any) -> list[str]:
    """Prompts from a list of strings, a ``.jsonl`` file (a ``"prompt"`` field per line), a text file
    (one prompt per non-empty line) or a ``datasets.Dataset`` with a ``prompt`` column (TRL's convention)."""
    if isinstance(prompts, str | Path):
        path = Path(prompts)
        if not path.is_file():
            raise ValueError(f"prompts file {path} does not exist")
        if path.suffix == ".jsonl":
            loaded = []
            for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
                if not line.strip():
                    continue
                try:
                    loaded.append(json.loads(line)["prompt"])
                except (json.JSONDecodeError, KeyError, TypeError) as error:
                    raise ValueError(
                        f"{path}, line {number}: expected a JSON object with a 'prompt'"
                    ) from error
        else:
            loaded = [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    elif hasattr(prompts, "column_names"):  # a datasets.Dataset
        if "prompt" not in prompts.column_names:
            raise ValueError(f"the dataset has no 'prompt' column (columns: {prompts.column_names})")
        loaded = list(prompts["prompt"])
    elif isinstance(prompts, Sequence):
        loaded = list(prompts)
    else:
        raise TypeError(
            f"prompts must be a list of strings, a file or a datasets.Dataset, got {type(prompts).__name__}"
        )
    if not loaded:
        raise ValueError("no prompts given")
    for index, prompt in enumerate(loaded):
        if not isinstance(prompt, str):
            raise TypeError(f"prompt {index} is a {type(prompt).__name__}, not a string")
        try:
            prompt.encode("utf-8")
        except UnicodeEncodeError as error:  # a lone surrogate, e.g. from a badly decoded file
            raise ValueError(
                f"prompt {index} is not valid Unicode text: {error.reason} at character {error.start}"
            ) from error
    return loaded
