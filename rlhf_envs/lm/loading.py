"""Load a causal LM and its tokenizer: the embedded default, a Hugging Face id or path, or a loaded model.

Every consumer of a language model (the TokenEnv, the reward-model trainer, the agents) goes through
:func:`load_causal_lm`, so ``model="embedded"`` means the same thing everywhere and a tokenizer that
does not fit its model is refused in one place.
"""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from rlhf_envs.device import resolve_device
from rlhf_envs.lm.assets import EMBEDDED_LM_DIR

__all__ = [
    "align_weights",
    "check_vocabularies",
    "load_causal_lm",
    "load_tokenizer",
    "model_location",
    "resolve_model_path",
    "resolve_tokenizer",
]


def model_location(model: str | Path) -> str:
    """``model`` as ``from_pretrained`` takes it: a local folder, or a Hugging Face id.

    What can only be a path (a ``Path``, an absolute or ``./`` path, more than one ``/``) must exist:
    otherwise ``FileNotFoundError`` says so, where the hub client would complain about the id's form.
    """
    name = str(model)
    looks_like_path = (
        isinstance(model, Path) or name.startswith(("/", "./", "../", "~")) or name.count("/") > 1
    )
    if looks_like_path and not Path(name).expanduser().exists():
        raise FileNotFoundError(f"no such folder: {name} (a model is a local folder or a Hugging Face id)")
    return str(Path(name).expanduser()) if looks_like_path else name


def resolve_model_path(model: str | Path) -> str:
    """``"embedded"`` becomes the embedded model's folder; any other id or path goes through
    :func:`model_location`."""
    if str(model) != "embedded":
        return model_location(model)
    if not (EMBEDDED_LM_DIR / "config.json").is_file():
        raise FileNotFoundError(
            f"the embedded language model is not in {EMBEDDED_LM_DIR} (no config.json); "
            "pretrain it with `rlhf-envs pretrain` or pass a Hugging Face model id or local path"
        )
    return str(EMBEDDED_LM_DIR)


def load_tokenizer(name_or_path: str | Path) -> PreTrainedTokenizerBase:
    """Load a tokenizer by id or path; a missing pad token becomes the EOS token (GPT-2's convention)."""
    return _with_pad_token(AutoTokenizer.from_pretrained(resolve_model_path(name_or_path)))


def _with_pad_token(tokenizer: PreTrainedTokenizerBase) -> PreTrainedTokenizerBase:
    if tokenizer.pad_token is None:
        if tokenizer.eos_token is None:
            raise ValueError(f"tokenizer {tokenizer.name_or_path!r} has neither a pad nor an EOS token")
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def resolve_tokenizer(
    model: PreTrainedModel, tokenizer: str | Path | PreTrainedTokenizerBase | None = None
) -> PreTrainedTokenizerBase:
    """The tokenizer to use with ``model``, with a pad token.

    ``tokenizer`` may be a tokenizer, an id or path to load one from, or ``None`` for the tokenizer
    saved where the model was loaded from (``model.config.name_or_path``); a model built in memory
    says nowhere, and then ``tokenizer`` is required.
    """
    if tokenizer is None:
        tokenizer = model.config.name_or_path
        if not tokenizer:
            raise ValueError("pass `tokenizer`: the given model does not say where it was loaded from")
    if isinstance(tokenizer, PreTrainedTokenizerBase):
        return _with_pad_token(tokenizer)
    return load_tokenizer(tokenizer)


def check_vocabularies(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase) -> None:
    """Raise ``ValueError`` when ``tokenizer`` cannot drive ``model``.

    The tokenizer may be smaller than the embedding matrix (models often pad their vocabulary to a
    multiple of 64), but never larger, and both must agree on the EOS token when both name one.
    """
    model_vocab = model.get_input_embeddings().num_embeddings
    if len(tokenizer) > model_vocab:
        raise ValueError(
            f"tokenizer has {len(tokenizer)} tokens but the model's vocabulary has {model_vocab}: "
            "they do not belong together"
        )
    model_eos = model.config.eos_token_id
    if isinstance(model_eos, list):
        model_eos = model_eos[0]
    if model_eos is not None and tokenizer.eos_token_id is not None and model_eos != tokenizer.eos_token_id:
        raise ValueError(
            f"tokenizer's EOS token id {tokenizer.eos_token_id} differs from the model's {model_eos}: "
            "they do not belong together"
        )


def load_causal_lm(
    model: str | Path | PreTrainedModel = "embedded",
    tokenizer: str | Path | PreTrainedTokenizerBase | None = None,
    device: str | torch.device = "auto",
    dtype: torch.dtype = torch.float32,
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Return ``(model, tokenizer)`` with the model in eval mode on ``device``.

    A model loaded by name or path gets ``dtype`` weights, float32 by default whatever dtype the
    checkpoint was saved in (transformers 5 would keep a bf16/fp16 checkpoint's): a policy trained
    from it needs float32 master weights (Adam's steps at lr 1e-5 round away in bf16, and fp16 has
    no grad scaler here). Ask for another dtype, or pass a loaded model, which keeps its own.

    Args:
        model: ``"embedded"`` (the default LM shipped in ``rlhf_envs/lm/brown``), a Hugging Face
            model id or local folder, or an already loaded ``PreTrainedModel`` (moved, not copied).
        tokenizer: a tokenizer, an id or path to load one from, or ``None`` to load the model's own.
        device: ``"auto"`` (CUDA when present), ``"cpu"``, ``"cuda"``...
        dtype: the weights' dtype of a model loaded by name or path.

    Raises:
        ValueError: when the tokenizer's vocabulary does not fit the model's.
    """
    resolved = resolve_device(device)
    if isinstance(model, PreTrainedModel):
        loaded = model
    elif isinstance(model, str | Path):
        loaded = AutoModelForCausalLM.from_pretrained(resolve_model_path(model), dtype=dtype)
        tokenizer = model if tokenizer is None else tokenizer
    else:
        raise TypeError(
            f"model must be 'embedded', an id or path, or a PreTrainedModel, got {type(model).__name__}"
        )
    tokenizer = resolve_tokenizer(loaded, tokenizer)
    check_vocabularies(loaded, tokenizer)
    return align_weights(loaded.to(resolved)).eval(), tokenizer


def align_weights(model: PreTrainedModel) -> PreTrainedModel:
    """``model`` with every weight in 64-byte aligned memory; returned for chaining.

    safetensors hands out weights mapped at any offset of the file, and CPU kernels take another
    path for unaligned data: the same model computes other bits than its pickled or deep-copied
    copy (whose memory is aligned). Copying the unaligned weights once makes both agree.
    """
    with torch.no_grad():
        for tensor in (*model.parameters(), *model.buffers()):
            if tensor.device.type == "cpu" and tensor.data_ptr() % 64:
                tensor.data = tensor.data.clone()
    return model
