"""Tiny GPT-2 models and a byte-level BPE tokenizer built offline, shared by the TokenEnv tests."""

from __future__ import annotations

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import GPT2Config, GPT2ForSequenceClassification, GPT2LMHeadModel, PreTrainedTokenizerFast

# Tiny models gain nothing from threads, and on a loaded 2-core machine torch's thread pool spins:
# one thread runs these tests ~10x faster there.
torch.set_num_threads(1)

EOS = "<|endoftext|>"
CORPUS = [
    "the cat sat on the mat and the dog sat on the log",
    "a good day makes a happy heart, a bad day makes a sad one",
    "love and joy and peace, anger and fear and war",
    "in the beginning was the word and the word was good",
] * 4


def tiny_tokenizer(vocab_size: int = 300) -> PreTrainedTokenizerFast:
    """A byte-level BPE tokenizer trained on a few sentences; EOS = pad = ``<|endoftext|>``."""
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=[EOS], initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    tokenizer.train_from_iterator(CORPUS, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, eos_token=EOS, pad_token=EOS)


def tiny_config(tokenizer: PreTrainedTokenizerFast, n_positions: int = 96) -> GPT2Config:
    return GPT2Config(
        vocab_size=len(tokenizer),
        n_positions=n_positions,
        n_embd=32,
        n_layer=2,
        n_head=2,
        bos_token_id=tokenizer.eos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )


def tiny_lm(tokenizer: PreTrainedTokenizerFast, seed: int = 0, n_positions: int = 96) -> GPT2LMHeadModel:
    torch.manual_seed(seed)
    return GPT2LMHeadModel(tiny_config(tokenizer, n_positions)).eval()


def tiny_reward_model(tokenizer: PreTrainedTokenizerFast, seed: int = 1) -> GPT2ForSequenceClassification:
    torch.manual_seed(seed)
    config = tiny_config(tokenizer)
    config.num_labels = 1
    return GPT2ForSequenceClassification(config).eval()


def length_reward(prompts: list[str], completions: list[str]) -> torch.Tensor:
    """A reward model as a plain callable: the length of each completion's text."""
    return torch.tensor([float(len(text)) for text in completions])
