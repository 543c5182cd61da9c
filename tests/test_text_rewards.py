"""Text reward models: HFRewardModel (TRL's sequence-classification convention) in the TokenEnv."""

from __future__ import annotations

import pytest
import torch
from tiny_lm import tiny_lm, tiny_reward_model, tiny_tokenizer

from rlhf_envs.envs.token import TokenEnv
from rlhf_envs.lm.assets import EVALUATIVE_PROMPTS_FILE, load_prompts
from rlhf_envs.lm.reward_model import HFRewardModel, encode_texts, resolve_reward_model

PROMPTS = ["the cat sat", "love", "a good day makes", "in the beginning", "the dog"]
COMPLETIONS = [" on the mat", " and joy", " a happy heart", " was the word and the word was good", ""]


@pytest.fixture(scope="module")
def classifier(tokenizer):
    return tiny_reward_model(tokenizer)


def one_by_one(classifier, tokenizer, prompts, completions) -> torch.Tensor:
    scores = []
    with torch.no_grad():
        for prompt, completion in zip(prompts, completions, strict=True):
            ids = tokenizer(prompt + completion, return_tensors="pt")["input_ids"]
            scores.append(classifier(input_ids=ids).logits[0, 0])
    return torch.stack(scores)


def test_batched_scores_equal_one_text_at_a_time(classifier, tokenizer):
    reward_model = HFRewardModel(classifier, tokenizer, device="cpu", batch_size=2)
    scores = reward_model(PROMPTS, COMPLETIONS)
    assert scores.shape == (5,) and scores.dtype == torch.float32
    torch.testing.assert_close(
        scores, one_by_one(classifier, tokenizer, PROMPTS, COMPLETIONS), atol=1e-5, rtol=0
    )


def test_token_scores_are_the_score_of_every_prefix_in_one_left_padded_pass(classifier, tokenizer):
    """Column j of ``token_scores`` is the model's own score of the text's first j + 1 tokens, for
    rows of different lengths left-padded together; an encoder's pooled head cannot do this."""
    reward_model = HFRewardModel(classifier, tokenizer, device="cpu")
    assert reward_model.scores_every_token
    texts = [prompt + completion for prompt, completion in zip(PROMPTS, COMPLETIONS, strict=True)]
    rows = tokenizer(texts)["input_ids"]
    width = max(len(row) for row in rows)
    input_ids = torch.tensor([[0] * (width - len(row)) + row for row in rows])
    attention_mask = torch.tensor([[0] * (width - len(row)) + [1] * len(row) for row in rows])
    scores = reward_model.token_scores(input_ids, attention_mask)
    assert scores.shape == (len(rows), width) and scores.dtype == torch.float32
    with torch.no_grad():
        for index, row in enumerate(rows):
            for length in range(1, len(row) + 1):
                own = classifier(input_ids=torch.tensor([row[:length]])).logits[0, 0]
                column = width - len(row) + length - 1
                torch.testing.assert_close(scores[index, column], own, atol=1e-5, rtol=0)

    from transformers import BertConfig, BertForSequenceClassification

    encoder = BertForSequenceClassification(
        BertConfig(
            vocab_size=len(tokenizer),
            hidden_size=32,
            num_hidden_layers=1,
            num_attention_heads=2,
            intermediate_size=64,
            num_labels=1,
            pad_token_id=tokenizer.pad_token_id,
        )
    )
    encoder_reward_model = HFRewardModel(encoder, tokenizer, device="cpu")
    assert not encoder_reward_model.scores_every_token
    with pytest.raises(ValueError, match="no per-token score head"):
        encoder_reward_model.token_scores(input_ids, attention_mask)


@pytest.mark.parametrize("attention", ["sdpa", "eager"])
def test_next_token_scores_score_each_prefix_followed_by_each_candidate_in_one_pass(tokenizer, attention):
    """``next_token_scores`` gives ``token_scores`` of the rows and, for each listed (row, column), the
    model's own score of the row's text up to that column followed by each candidate token: rows of
    different lengths, several prefixes of one row, a row with none, both attention kinds."""
    classifier = tiny_reward_model(tokenizer)
    classifier.set_attn_implementation(attention)
    reward_model = HFRewardModel(classifier, tokenizer, device="cpu")
    texts = [prompt + completion for prompt, completion in zip(PROMPTS, COMPLETIONS, strict=True)]
    rows = tokenizer(texts)["input_ids"]
    width = max(len(row) for row in rows)
    input_ids = torch.tensor([[0] * (width - len(row)) + row for row in rows])
    attention_mask = torch.tensor([[0] * (width - len(row)) + [1] * len(row) for row in rows])
    # Row 1 is left without queries; row 3 has three, listed out of order.
    query_rows = torch.tensor([3, 0, 3, 2, 4, 3])
    query_columns = torch.tensor([width - 1, width - 2, width - 5, width - 1, width - 1, width - 3])
    candidates = torch.randint(1, len(tokenizer), (6, 3), generator=torch.Generator().manual_seed(0))
    scores, candidate_scores = reward_model.next_token_scores(
        input_ids, attention_mask, query_rows, query_columns, candidates
    )
    torch.testing.assert_close(
        scores * attention_mask, reward_model.token_scores(input_ids, attention_mask) * attention_mask
    )
    assert candidate_scores.shape == (6, 3) and candidate_scores.dtype == torch.float32
    with torch.no_grad():
        for query, (row, column) in enumerate(zip(query_rows.tolist(), query_columns.tolist(), strict=True)):
            prefix = input_ids[row, : column + 1][attention_mask[row, : column + 1].bool()]
            for j, token in enumerate(candidates[query].tolist()):
                own = classifier(input_ids=torch.cat([prefix, torch.tensor([token])])[None]).logits[0, 0]
                torch.testing.assert_close(candidate_scores[query, j], own, atol=1e-5, rtol=0)


def test_texts_end_with_eos_as_trl_trains_them_when_the_pad_token_is_another(tokenizer):
    """TRL's RewardTrainer appends EOS to every text, so a TRL reward model reads its score there; with
    pad == EOS (GPT-2's convention) an appended EOS would be taken for padding, so none is added."""
    encoded = encode_texts(tokenizer, PROMPTS[:2], COMPLETIONS[:2], 64, torch.device("cpu"))
    assert (encoded["input_ids"] == tokenizer.eos_token_id).sum() == (encoded["attention_mask"] == 0).sum()
    own_pad = tiny_tokenizer()
    own_pad.add_special_tokens({"pad_token": "<pad>"})
    encoded = encode_texts(own_pad, PROMPTS[:2], COMPLETIONS[:2], 64, torch.device("cpu"))
    last = encoded["attention_mask"].sum(1) - 1  # right-padded: each text's last real token
    assert encoded["input_ids"][torch.arange(2), last].tolist() == [own_pad.eos_token_id] * 2


def test_loads_by_path_including_float16_weights(classifier, tokenizer, tmp_path):
    half = {name: tensor.half() for name, tensor in classifier.state_dict().items()}
    classifier.save_pretrained(tmp_path, state_dict=half)
    tokenizer.save_pretrained(tmp_path)
    reward_model = resolve_reward_model(str(tmp_path), device="cpu")
    assert isinstance(reward_model, HFRewardModel) and reward_model.model.dtype == torch.float32
    expected = one_by_one(classifier, tokenizer, PROMPTS, COMPLETIONS)
    torch.testing.assert_close(reward_model(PROMPTS, COMPLETIONS), expected, atol=2e-2, rtol=0)


def test_model_with_more_than_one_label_is_refused(tokenizer):
    model = tiny_reward_model(tokenizer)
    model.config.num_labels = 2
    with pytest.raises(ValueError, match="num_labels=1"):
        HFRewardModel(model, tokenizer, device="cpu")


def test_callables_pass_through_and_bad_arguments_are_refused():
    def reward(prompts, completions):
        return torch.zeros(len(prompts))

    assert resolve_reward_model(reward) is reward
    with pytest.raises(TypeError, match="reward_model"):
        resolve_reward_model(3)


def test_token_env_reward_is_the_reward_models_score(classifier, tokenizer):
    env = TokenEnv(
        model=tiny_lm(tokenizer),
        tokenizer=tokenizer,
        prompts=PROMPTS,
        reward_model=classifier,
        max_new_tokens=3,
        device="cpu",
    )
    env.reset(seed=0)
    for token in (30, 40, 50):
        _, reward, _, truncated, info = env.step(token)
    assert truncated and info["completion"] == tokenizer.decode([30, 40, 50])
    expected = one_by_one(classifier, tokenizer, [info["prompt"]], [info["completion"]])
    assert reward == pytest.approx(float(expected[0]), abs=1e-5) and reward == info["score"]


def test_embedded_reward_model_ranks_the_demos_held_out_prompts_kind_continuations_first():
    """The shipped reward model (pretrained on other prompts' labels) orders plain sentiment on the
    demo's own held-out prompts as VADER does."""
    prompts = load_prompts(EVALUATIVE_PROMPTS_FILE)[:20]
    reward_model = resolve_reward_model("embedded", device="cpu")
    kind = reward_model(prompts, [" very good, and we were all happy."] * len(prompts))
    unkind = reward_model(prompts, [" very bad, and we were all sad."] * len(prompts))
    assert (kind > unkind).all()
