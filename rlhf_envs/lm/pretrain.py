"""``rlhf-envs pretrain``: pretrain the embedded default language model from scratch.

This is the lecture's pre-training step: the model reads text and learns to predict each next token
(self-supervised; the loss is the cross-entropy between its next-token distribution and the token that
really comes next). It trains, in order:

1. a byte-level BPE tokenizer (``tokenizers``) on the training split, with ``<|endoftext|>`` as its
   end-of-text and padding token, saved so that ``AutoTokenizer.from_pretrained(out)`` loads it;
2. a small GPT-2 (``transformers.GPT2LMHeadModel``) on random windows of the training text;
3. then it measures the perplexity on held-out chapters, writes the model (safetensors), the tokenizer
   and a ``training_summary.json`` to ``--out``, and prompts drawn from the held-out text to
   ``--prompts-out``.

The corpus is the King James Bible (public domain) from Debian's ``bible-kjv`` package
(``apt-get install -y bible-kjv``), or any text file given with ``--corpus-file``. The shipped weights in
``rlhf_envs/lm/default`` come from ``rlhf-envs pretrain`` with the defaults; see ``rlhf_envs/lm/README.md``
for the figures measured.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from tqdm.auto import tqdm
from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast, get_cosine_schedule_with_warmup

from rlhf_envs.device import resolve_device
from rlhf_envs.lm.assets import DEFAULT_PROMPTS_FILE, EMBEDDED_LM_DIR
from rlhf_envs.lm.corpus import load_kjv, make_prompts, read_text_file, split_documents

EOS_TOKEN = "<|endoftext|>"


@dataclass
class PretrainConfig:
    """Everything that decides the pretrained weights; the defaults reproduce the shipped model."""

    out: Path = EMBEDDED_LM_DIR
    prompts_out: Path = DEFAULT_PROMPTS_FILE
    corpus_file: Path | None = None  # None: the King James Bible from the bible-kjv package
    max_documents: int | None = None  # use only the first documents (quick runs)
    heldout_every: int = 20
    vocab_size: int = 4096
    context_length: int = 128
    n_embd: int = 192
    n_layer: int = 4
    n_head: int = 4
    steps: int = 1000
    batch_size: int = 16
    learning_rate: float = 1e-3
    warmup_steps: int = 50
    weight_decay: float = 0.1
    max_grad_norm: float = 1.0
    num_prompts: int = 500
    seed: int = 0
    device: str = "auto"
    threads: int = 2

    def __post_init__(self) -> None:
        for name in (
            "vocab_size",
            "context_length",
            "n_layer",
            "n_head",
            "steps",
            "batch_size",
            "num_prompts",
            "threads",
        ):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        if self.max_documents is not None and self.max_documents < 1:
            raise ValueError(f"max_documents must be positive, got {self.max_documents}")
        if self.n_embd % self.n_head:
            raise ValueError(f"n_embd ({self.n_embd}) must be divisible by n_head ({self.n_head})")
        if self.learning_rate <= 0:
            raise ValueError(f"learning_rate must be positive, got {self.learning_rate}")


def train_tokenizer(texts: list[str], vocab_size: int, context_length: int) -> PreTrainedTokenizerFast:
    """Train a byte-level BPE tokenizer (GPT-2's scheme) whose only special token is ``<|endoftext|>``."""
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[EOS_TOKEN],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),  # every byte stays encodable
        show_progress=False,
    )
    tokenizer.train_from_iterator(texts, trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        eos_token=EOS_TOKEN,
        bos_token=EOS_TOKEN,
        unk_token=EOS_TOKEN,
        pad_token=EOS_TOKEN,  # GPT-2 has no pad token; padding is masked out anyway
        model_max_length=context_length,
    )


def encode(tokenizer: PreTrainedTokenizerFast, texts: list[str]) -> torch.Tensor:
    """One token stream of all texts, each followed by ``<|endoftext|>``."""
    ids: list[int] = []
    # The backend tokenizer encodes whole documents without the per-sequence length warning.
    for encoding in tokenizer.backend_tokenizer.encode_batch(texts, add_special_tokens=False):
        ids.extend(encoding.ids)
        ids.append(tokenizer.eos_token_id)
    return torch.tensor(ids, dtype=torch.long)


@torch.no_grad()
def perplexity(model: GPT2LMHeadModel, stream: torch.Tensor, context_length: int, batch_size: int) -> float:
    """exp of the mean next-token cross-entropy over consecutive windows of ``stream``."""
    model.eval()
    device = next(model.parameters()).device
    windows = list(torch.split(stream, context_length))
    if len(windows) > 1 and len(windows[-1]) < context_length:
        windows.pop()  # keep one batch shape; the dropped tail is shorter than a window
    total_nll, total_tokens = 0.0, 0
    for start in range(0, len(windows), batch_size):
        batch = torch.stack(windows[start : start + batch_size]).to(device)
        predicted = batch.numel() - batch.shape[0]  # the first token of each window has no context
        total_nll += model(input_ids=batch, labels=batch).loss.item() * predicted
        total_tokens += predicted
    if total_tokens == 0:
        raise ValueError("the held-out text is too short to measure a perplexity")
    return math.exp(total_nll / total_tokens)


def pretrain(config: PretrainConfig) -> dict:
    """Train tokenizer and model as ``config`` says, save them, and return the training summary."""
    started = time.perf_counter()
    torch.manual_seed(config.seed)
    device = resolve_device(config.device)
    if device.type == "cpu":
        torch.set_num_threads(config.threads)

    documents = load_kjv() if config.corpus_file is None else read_text_file(config.corpus_file)
    documents = documents[: config.max_documents]
    train_docs, heldout_docs = split_documents(documents, config.heldout_every)
    train_texts = [" ".join(doc) for doc in train_docs]
    heldout_texts = [" ".join(doc) for doc in heldout_docs]

    tokenizer = train_tokenizer(train_texts, config.vocab_size, config.context_length)
    train_stream = encode(tokenizer, train_texts)
    heldout_stream = encode(tokenizer, heldout_texts)
    if len(train_stream) <= config.context_length:
        raise ValueError(
            f"the training text has {len(train_stream)} tokens, fewer than one window of "
            f"context_length={config.context_length}: give more text or a shorter context"
        )

    model_config = GPT2Config(
        vocab_size=len(tokenizer),
        n_positions=config.context_length,
        n_embd=config.n_embd,
        n_layer=config.n_layer,
        n_head=config.n_head,
        # No dropout: a few epochs do not overfit, and RLHF later wants train-mode outputs to match eval.
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
        bos_token_id=tokenizer.eos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    model = GPT2LMHeadModel(model_config).to(device)
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay
    )
    schedule = get_cosine_schedule_with_warmup(optimizer, config.warmup_steps, config.steps)
    generator = torch.Generator().manual_seed(config.seed)
    offsets = torch.arange(config.context_length)

    model.train()
    progress = tqdm(range(config.steps), desc="pretrain", unit="step")
    for _ in progress:
        # A batch of random windows of the training stream; the model shifts labels by one itself.
        starts = torch.randint(
            0, len(train_stream) - config.context_length, (config.batch_size, 1), generator=generator
        )
        batch = train_stream[starts + offsets].to(device)
        loss = model(input_ids=batch, labels=batch).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), config.max_grad_norm)
        optimizer.step()
        schedule.step()
        optimizer.zero_grad(set_to_none=True)
        progress.set_postfix(loss=f"{loss.item():.3f}", lr=f"{schedule.get_last_lr()[0]:.2e}")

    heldout_ppl = perplexity(model, heldout_stream, config.context_length, config.batch_size)
    prompts = make_prompts(heldout_docs, config.num_prompts, config.seed)
    samples = generate_samples(model, tokenizer, prompts[:3], seed=config.seed)

    config.out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(config.out)  # safetensors
    tokenizer.save_pretrained(config.out)
    config.prompts_out.parent.mkdir(parents=True, exist_ok=True)
    config.prompts_out.write_text("\n".join(prompts) + "\n", encoding="utf-8")

    summary = {
        "config": {key: str(value) for key, value in dataclasses.asdict(config).items()},
        "parameters": model.num_parameters(),
        "train_tokens": len(train_stream),
        "heldout_tokens": len(heldout_stream),
        "final_train_loss": loss.item(),
        "heldout_perplexity": heldout_ppl,
        "wall_seconds": time.perf_counter() - started,
        "samples": samples,
    }
    (config.out / "training_summary.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    return summary


@torch.no_grad()
def generate_samples(
    model: GPT2LMHeadModel,
    tokenizer: PreTrainedTokenizerFast,
    prompts: list[str],
    seed: int,
    max_new_tokens: int = 32,
) -> list[str]:
    """Sampled continuations (temperature 1, top-k 50) of ``prompts``, prompt included, within the context."""
    model.eval()
    torch.manual_seed(seed)
    device = next(model.parameters()).device
    samples = []
    for prompt in prompts:
        input_ids = tokenizer(prompt, return_tensors="pt").input_ids.to(device)
        output = model.generate(
            input_ids,
            attention_mask=torch.ones_like(input_ids),
            max_new_tokens=min(max_new_tokens, model.config.n_positions - input_ids.shape[1]),
            do_sample=True,
            top_k=50,
            pad_token_id=tokenizer.pad_token_id,
        )
        samples.append(tokenizer.decode(output[0], skip_special_tokens=True))
    return samples


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add one option per :class:`PretrainConfig` field."""
    defaults = PretrainConfig()
    parser.add_argument("--out", type=Path, default=defaults.out, help="model and tokenizer directory")
    parser.add_argument(
        "--prompts-out", type=Path, default=defaults.prompts_out, help="held-out prompts file"
    )
    parser.add_argument(
        "--corpus-file", type=Path, default=None, help="plain text instead of the King James Bible"
    )
    parser.add_argument("--max-documents", type=int, default=None, help="use only the first N documents")
    parser.add_argument("--heldout-every", type=int, default=defaults.heldout_every)
    parser.add_argument("--vocab-size", type=int, default=defaults.vocab_size)
    parser.add_argument("--context-length", type=int, default=defaults.context_length)
    parser.add_argument("--n-embd", type=int, default=defaults.n_embd)
    parser.add_argument("--n-layer", type=int, default=defaults.n_layer)
    parser.add_argument("--n-head", type=int, default=defaults.n_head)
    parser.add_argument("--steps", type=int, default=defaults.steps)
    parser.add_argument("--batch-size", type=int, default=defaults.batch_size)
    parser.add_argument("--learning-rate", type=float, default=defaults.learning_rate)
    parser.add_argument("--warmup-steps", type=int, default=defaults.warmup_steps)
    parser.add_argument("--weight-decay", type=float, default=defaults.weight_decay)
    parser.add_argument("--num-prompts", type=int, default=defaults.num_prompts)
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument("--device", default=defaults.device, help='"auto", "cpu" or "cuda"')
    parser.add_argument("--threads", type=int, default=defaults.threads, help="CPU threads")


def run(args: argparse.Namespace) -> int:
    """Entry point of ``rlhf-envs pretrain``."""
    fields = {field.name for field in dataclasses.fields(PretrainConfig)}
    config = PretrainConfig(**{key: value for key, value in vars(args).items() if key in fields})
    summary = pretrain(config)
    print(f"parameters: {summary['parameters']:,}")
    print(f"held-out perplexity: {summary['heldout_perplexity']:.2f} ({summary['heldout_tokens']:,} tokens)")
    print(f"wall time: {summary['wall_seconds']:.0f} s; saved to {config.out}")
    for sample in summary["samples"]:
        print(f"  sample: {sample!r}")
    return 0
