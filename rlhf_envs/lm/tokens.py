"""Small token-level helpers every user of a causal LM needs, written once.

Left-padded batches are the rule here (the TokenEnv's window, batched generation), so position ids
come from the attention mask, and a tokenizer's padding side is set for one call and put back.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Literal

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

__all__ = ["decoding_mask", "position_ids", "prepared_mask", "token_logprobs", "tokenizer_sides"]

Side = Literal["left", "right"]


@contextmanager
def tokenizer_sides(
    tokenizer: PreTrainedTokenizerBase, padding: Side | None = None, truncation: Side | None = None
) -> Iterator[PreTrainedTokenizerBase]:
    """Set the tokenizer's padding and/or truncation side inside the ``with`` block, restore them after.

    The tokenizer is shared (by the env, the policy, the reward model), so a caller that needs
    left padding for generation must not leave it changed for the others.
    """
    saved = tokenizer.padding_side, tokenizer.truncation_side
    try:
        if padding is not None:
            tokenizer.padding_side = padding
        if truncation is not None:
            tokenizer.truncation_side = truncation
        yield tokenizer
    finally:
        tokenizer.padding_side, tokenizer.truncation_side = saved


def position_ids(attention_mask: torch.Tensor) -> torch.Tensor:
    """Position ids of left-padded sequences: 0 at each row's first real token, 0 on the padding."""
    return (attention_mask.cumsum(-1) - 1).clamp(min=0)


def token_logprobs(logits: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """log softmax(logits)[token] for logits [..., V] and tokens [...], without the [..., V] log-softmax.

    Computed in the logits' dtype: cast them first (``.float()``) when they are half precision.
    """
    return logits.gather(-1, tokens[..., None])[..., 0] - logits.logsumexp(-1)


def prepared_mask(model: PreTrainedModel, visible: torch.Tensor) -> torch.Tensor:
    """``visible`` [B, Q, K] (which keys each query attends to) as a prepared 4-D mask [B, 1, Q, K] that
    ``model``'s attention uses as it is: boolean for SDPA, additive for eager attention."""
    implementation = getattr(model.config, "_attn_implementation", None)
    if implementation == "sdpa":
        return visible.bool()[:, None]
    if implementation == "eager":
        return (1 - visible[:, None].to(model.dtype)) * torch.finfo(model.dtype).min
    raise ValueError(
        f"a prepared attention mask needs SDPA or eager attention, the model uses {implementation!r}"
    )


def decoding_mask(model: PreTrainedModel, attention_mask: torch.Tensor) -> torch.Tensor:
    """The attention mask [B, L] of a one-token decoding step over a cache, as ``model``'s attention takes it.

    Given a 2-D mask, transformers checks on the host whether it has padding (a device sync per
    token); a prepared 4-D mask ([B, 1, 1, L], :func:`prepared_mask`) is used as it is. Other attention
    implementations get the 2-D mask.
    """
    if getattr(model.config, "_attn_implementation", None) in ("sdpa", "eager"):
        return prepared_mask(model, attention_mask[:, None, :])
    return attention_mask
