"""A KV cache over a sliding window of tokens, written in place: what token-by-token decoding needs.

Hugging Face's ``DynamicLayer`` concatenates on every step, a copy of the whole cache per token.
:class:`WindowLayer` writes the new column into a preallocated buffer and hands attention a view.
The TokenEnv (the reference model) and the token policy (the trained model) both decode this way.
"""

from __future__ import annotations

from typing import Any

import torch
from transformers.cache_utils import Cache, DynamicLayer
from transformers.modeling_outputs import CausalLMOutputWithPast, ModelOutput

__all__ = ["CACHE", "WindowLayer", "returned_cache"]

#: The name of the KV cache in a model's forward arguments and outputs: transformers 5 renamed
#: ``past_key_values`` to ``cache`` (5.17 has the old name; 5.24 the new, the old one deprecated).
CACHE = "cache" if "cache" in CausalLMOutputWithPast.__dataclass_fields__ else "past_key_values"


def returned_cache(output: ModelOutput) -> Cache:
    """The KV cache that a forward with ``use_cache=True`` returned, under this transformers' name."""
    return getattr(output, CACHE)


class WindowLayer(DynamicLayer):
    """A KV-cache layer over a sliding window of ``width`` columns in a preallocated buffer.

    The buffer holds two windows, so the window slides with a copy of one window every ``width``
    steps. The view covers only the window's last columns that some episode still attends to, so
    attention skips the columns dead in every row.
    """

    def __init__(self, keys: torch.Tensor, values: torch.Tensor, width: int) -> None:
        super().__init__()
        shape = (*keys.shape[:2], 2 * width, keys.shape[3])
        self.key_buffer = keys.new_zeros(shape)
        self.value_buffer = values.new_zeros(shape)
        self.width = width
        self.start = 0
        self.is_initialized = True
        self.write(slice(None), keys, values)

    def write(self, rows: slice | torch.Tensor, keys: torch.Tensor, values: torch.Tensor) -> None:
        """Put a prefill's keys and values (right-aligned) into the window of ``rows``."""
        columns = slice(self.start + self.width - keys.shape[2], self.start + self.width)
        self.key_buffer[rows, :, columns] = keys
        self.value_buffer[rows, :, columns] = values
        self._view(self.start + self.width, self.width)

    def slide(self, live: int) -> None:
        """Drop the oldest column, leaving ``width - 1`` columns for the next token, of which the
        last ``live`` are viewed."""
        self.start += 1
        if self.start + self.width > self.key_buffer.shape[2]:
            kept = slice(self.start, self.start + self.width - 1)
            # start > width: the kept columns and their destination do not overlap.
            self.key_buffer[:, :, : self.width - 1] = self.key_buffer[:, :, kept]
            self.value_buffer[:, :, : self.width - 1] = self.value_buffer[:, :, kept]
            self.start = 0
        self._view(self.start + self.width - 1, live)

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs):
        new = key_states.shape[2]
        self.key_buffer[:, :, self.end : self.end + new] = key_states
        self.value_buffer[:, :, self.end : self.end + new] = value_states
        self._view(self.end + new, self.keys.shape[2] + new)
        return self.keys, self.values

    def _view(self, end: int, length: int) -> None:
        self.end = end
        self.keys = self.key_buffer[:, :, end - length : end]
        self.values = self.value_buffer[:, :, end - length : end]

    def state_dict(self) -> dict[str, Any]:
        """A copy of the buffers and the window's place in them."""
        return {
            "key_buffer": self.key_buffer.clone(),
            "value_buffer": self.value_buffer.clone(),
            "width": self.width,
            "start": self.start,
            "end": self.end,
            "length": self.keys.shape[2],
        }

    @classmethod
    def from_state(cls, state: dict[str, Any], device: torch.device) -> WindowLayer:
        """Inverse of :meth:`state_dict`."""
        layer = cls.__new__(cls)
        DynamicLayer.__init__(layer)
        layer.key_buffer = state["key_buffer"].to(device).clone()
        layer.value_buffer = state["value_buffer"].to(device).clone()
        layer.width, layer.start = state["width"], state["start"]
        layer.is_initialized = True
        layer._view(state["end"], state["length"])
        return layer
