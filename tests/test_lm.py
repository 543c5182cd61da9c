"""The embedded default language model: the shipped files, and the `rlhf-envs pretrain` command."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from rlhf_envs.cli import main
from rlhf_envs.lm.assets import DEFAULT_PROMPTS_FILE
from rlhf_envs.lm.assets import EMBEDDED_LM_DIR as DEFAULT_MODEL_DIR
from rlhf_envs.lm.corpus import make_prompts, parse_kjv, read_text_file, split_documents
from rlhf_envs.lm.pretrain import EOS_TOKEN, PretrainConfig


@pytest.fixture(scope="module")
def shipped():
    model = AutoModelForCausalLM.from_pretrained(DEFAULT_MODEL_DIR)
    tokenizer = AutoTokenizer.from_pretrained(DEFAULT_MODEL_DIR)
    return model.eval(), tokenizer


def test_shipped_model_and_tokenizer_agree(shipped):
    model, tokenizer = shipped
    assert tokenizer.is_fast
    assert tokenizer.eos_token == tokenizer.pad_token == EOS_TOKEN
    assert model.config.vocab_size == len(tokenizer)
    assert model.config.eos_token_id == tokenizer.eos_token_id
    assert model.config.pad_token_id == tokenizer.pad_token_id
    weights = DEFAULT_MODEL_DIR / "model.safetensors"
    assert weights.stat().st_size <= 20 * 2**20
    assert not list(DEFAULT_MODEL_DIR.glob("*.bin"))  # safetensors only


def test_shipped_model_prefers_english_word_order(shipped):
    model, tokenizer = shipped
    sentence = "And the king said unto his servants, Go and bring the man before me."
    words = sentence.split()
    scrambled = " ".join(words[1::2] + words[::2])

    def nll(text: str) -> float:
        ids = tokenizer(text, return_tensors="pt").input_ids
        with torch.no_grad():
            return model(input_ids=ids, labels=ids).loss.item() * (ids.shape[1] - 1)

    assert nll(sentence) < nll(scrambled) - 10.0


@pytest.mark.parametrize("do_sample", [False, True])
def test_shipped_model_generates_decodable_text(shipped, do_sample):
    model, tokenizer = shipped
    torch.manual_seed(0)
    prompts = ["And God said", "The children of"]
    batch = tokenizer(prompts, return_tensors="pt", padding=True, padding_side="left")
    output = model.generate(
        **batch, max_new_tokens=16, do_sample=do_sample, pad_token_id=tokenizer.pad_token_id
    )
    assert output.shape[1] > batch.input_ids.shape[1]
    assert int(output.max()) < len(tokenizer)
    for text, prompt in zip(tokenizer.batch_decode(output, skip_special_tokens=True), prompts, strict=True):
        assert text.startswith(prompt)
        continuation = text[len(prompt) :]
        letters = sum(character.isalpha() for character in continuation)
        assert letters >= len(continuation.replace(" ", "")) * 0.7, continuation


def test_shipped_prompts_are_short_distinct_lines():
    prompts = DEFAULT_PROMPTS_FILE.read_text(encoding="utf-8").splitlines()
    assert 300 <= len(prompts) <= 1000
    assert len(set(prompts)) == len(prompts)
    assert all(1 <= len(prompt.split()) <= 6 for prompt in prompts)


def test_parse_kjv_reads_the_bible_program_output():
    text = (
        "\nGenesis 1\n\n  1 In the beginning God created the heaven and the earth.\n"
        "  2 And the earth was without form, and void; and darkness was upon the face of\n"
        "the deep.\n\n1 Samuel 1\n\n  1 Now there was a certain man.\n"
    )
    assert parse_kjv(text) == [
        [
            "In the beginning God created the heaven and the earth.",
            "And the earth was without form, and void; and darkness was upon the face of the deep.",
        ],
        ["Now there was a certain man."],
    ]
    with pytest.raises(ValueError, match="no verses"):
        parse_kjv("Genesis 1\n")


def test_split_and_prompts():
    documents = [[f"sentence number {i} has several more words in it"] for i in range(10)]
    train, heldout = split_documents(documents, heldout_every=5)
    assert heldout == [documents[4], documents[9]]
    assert len(train) == 8
    prompts = make_prompts(heldout, count=5, seed=0)
    assert len(prompts) == 2
    assert all(prompt.startswith("sentence number") for prompt in prompts)
    with pytest.raises(ValueError, match="too few"):
        split_documents(documents[:3], heldout_every=5)
    with pytest.raises(ValueError, match="heldout_every"):
        split_documents(documents, heldout_every=1)


def test_config_rejects_bad_shapes():
    with pytest.raises(ValueError, match="divisible"):
        PretrainConfig(n_embd=30, n_head=4)
    with pytest.raises(ValueError, match="steps"):
        PretrainConfig(steps=0)
    with pytest.raises(ValueError, match="max_documents"):
        PretrainConfig(max_documents=-3)


def test_pretrain_command_tiny_run_reloads(tmp_path):
    corpus = tmp_path / "corpus.txt"
    sentences = [
        "The little dog ran to the river and drank the cold water.",
        "A kind old woman gave the children bread and honey.",
        "The sun rose over the hills and the birds began to sing.",
    ]
    corpus.write_text("\n\n".join(" ".join(sentences[i % 3 :] + sentences[: i % 3]) for i in range(12)))
    assert len(read_text_file(corpus)) == 12
    out, prompts_file = tmp_path / "model", tmp_path / "prompts.txt"
    argv = ["pretrain", "--corpus-file", str(corpus), "--out", str(out), "--prompts-out", str(prompts_file)]
    argv += "--steps 3 --vocab-size 300 --context-length 16 --n-embd 16 --n-layer 1 --n-head 2".split()
    argv += "--batch-size 4 --heldout-every 4 --device cpu".split()
    assert main(argv) == 0

    model = AutoModelForCausalLM.from_pretrained(out)
    tokenizer = AutoTokenizer.from_pretrained(out)
    assert (out / "model.safetensors").exists()
    assert model.config.vocab_size == len(tokenizer) <= 300
    assert model.config.n_positions == 16
    assert model.config.eos_token_id == tokenizer.eos_token_id
    assert tokenizer.decode(tokenizer("The little dog").input_ids) == "The little dog"
    assert prompts_file.read_text().splitlines()[0].split()[0] in {"The", "A"}
