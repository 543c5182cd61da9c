"""TRL interop: its three preference forms, its pairwise judges both ways, its reward models both ways,
and TRL's reward-training options (centring, margin) in our reward trainer."""

from __future__ import annotations

import json
import math

import gymnasium as gym
import numpy as np
import pytest
import torch
from datasets import Dataset, DatasetDict
from tiny_lm import tiny_lm, tiny_reward_model, tiny_tokenizer

from rlhf_envs.lm.reward_model import HFRewardModel, encode_texts
from rlhf_envs.preferences.reward_trainer import RewardModelTrainer, RewardTrainerConfig
from rlhf_envs.preferences.text import TextPreferenceStore
from rlhf_envs.preferences.text_labelers import SyntheticTextLabeler, collect_text_preferences
from rlhf_envs.preferences.trl_formats import load_trl_preferences, to_text_preference

trl = pytest.importorskip("trl", reason="TRL is in the test extra: pip install -e '.[test]'")
from trl import RewardConfig, RewardTrainer  # noqa: E402

from rlhf_envs.preferences.trl_judges import JudgeLabeler, LabelerJudge  # noqa: E402

BasePairwiseJudge = pytest.importorskip("trl.experimental.judges").BasePairwiseJudge

# A chat template in the style of ChatML, enough to render conversations with the tiny tokenizer.
CHAT_TEMPLATE = (
    "{% for m in messages %}<{{ m['role'] }}>{{ m['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}<assistant>{% endif %}"
)


@pytest.fixture(scope="module")
def tokenizer():
    tokenizer = tiny_tokenizer()
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


def comparisons(count: int, seed: int) -> Dataset:
    """Explicit-prompt pairs whose chosen completion is always positive, the rejected negative."""
    rng = np.random.default_rng(seed)
    rows = {"prompt": [], "chosen": [], "rejected": []}
    for _ in range(count):
        rows["prompt"].append(f"the {rng.choice(['cat', 'dog', 'day'])} was")
        rows["chosen"].append(" good and happy" if rng.random() < 0.5 else " love and joy")
        rows["rejected"].append(" bad and sad" if rng.random() < 0.5 else " anger and fear")
    return Dataset.from_dict(rows)


# -- TRL's three preference forms -------------------------------------------------------------------


def test_explicit_and_implicit_prompt_forms_read_alike(tmp_path):
    """TRL: implicit-prompt rows hold the whole text; the prompt is the shared start, the space before
    the first difference stays with the completions (trl.extract_prompt)."""
    explicit = {"prompt": "the cat was", "chosen": " good", "rejected": " bad"}
    implicit = {"chosen": "the cat was good", "rejected": "the cat was bad"}
    assert to_text_preference(explicit) == explicit
    assert to_text_preference(implicit) == explicit
    path = tmp_path / "implicit.jsonl"
    path.write_text(json.dumps(implicit) + "\n" + json.dumps(implicit) + "\n")
    assert load_trl_preferences(path).to_list() == [explicit, explicit]
    splits = DatasetDict(train=Dataset.from_list([implicit]), test=Dataset.from_list([explicit]))
    assert load_trl_preferences(splits, split="test").to_list() == [explicit]
    parquet = tmp_path / "explicit.parquet"
    Dataset.from_list([explicit]).to_parquet(parquet)
    assert load_trl_preferences(parquet).to_list() == [explicit]


def test_conversational_forms_render_with_the_chat_template(tokenizer):
    """TRL: conversational rows are message lists; the prompt (given, or the shared first messages) is
    rendered with the generation prompt, each completion is the rest of its rendered conversation."""
    question = [{"role": "user", "content": "what colour is the sky?"}]
    blue, green = [{"role": "assistant", "content": "blue"}], [{"role": "assistant", "content": "green"}]
    expected = {
        "prompt": "<user>what colour is the sky?\n<assistant>",
        "chosen": "blue\n",
        "rejected": "green\n",
    }
    explicit = {"prompt": question, "chosen": blue, "rejected": green}
    implicit = {"chosen": question + blue, "rejected": question + green}
    assert to_text_preference(explicit, tokenizer) == expected
    assert to_text_preference(implicit, tokenizer) == expected
    with pytest.raises(ValueError, match="chat template"):
        to_text_preference(explicit, tiny_tokenizer())


def test_margin_is_kept_and_bad_rows_are_named():
    rows = [{"prompt": "a", "chosen": " b", "rejected": " c", "margin": 2}]
    assert load_trl_preferences(Dataset.from_list(rows)).to_list() == [{**rows[0], "margin": 2.0}]
    bad = [{"prompt": "a", "chosen": " b", "rejected": " c"}, {"prompt": "a", "chosen": " b"}]
    with pytest.raises(ValueError, match=r"preference 1 .*missing field\(s\) \['rejected'\]"):
        load_trl_preferences(Dataset.from_list(bad))
    with pytest.raises(ValueError, match="both be strings or both be lists"):
        to_text_preference({"chosen": "x", "rejected": [{"role": "user", "content": "y"}]})
    with pytest.raises(ValueError, match="beginning of the other"):
        to_text_preference({"chosen": "same", "rejected": "same"})
    with pytest.raises(ValueError, match="does not exist"):
        load_trl_preferences("./missing.jsonl")


# -- pairwise judges, both ways ---------------------------------------------------------------------


class LongerIsBetter(BasePairwiseJudge):
    """A TRL judge that prefers the longer completion, and fails (-1) on a tie."""

    def judge(self, prompts, completions, shuffle_order=True):
        return [-1 if len(a) == len(b) else int(len(b) > len(a)) for a, b in completions]


def test_a_trl_judge_labels_our_pairs(tmp_path):
    store = TextPreferenceStore(tmp_path / "labels.jsonl")
    labeler = JudgeLabeler(LongerIsBetter())
    added = collect_text_preferences(
        store, labeler, ["p"] * 3, ["long one", "s", "ab"], ["s", "long one", "cd"]
    )
    assert added == 2  # the tie was a failed judgement: skipped
    assert [(row["chosen"], row["rejected"]) for row in store] == [("long one", "s"), ("long one", "s")]


def test_our_labeler_judges_in_trl_and_shuffling_does_not_change_the_verdict():
    """TRL's BasePairwiseJudge contract: the index of the better completion of each pair, -1 on failure."""
    labeler = SyntheticTextLabeler(score=lambda prompt, completion: float(len(completion)), beta=1e6)
    judge = LabelerJudge(labeler, seed=0)
    assert isinstance(judge, BasePairwiseJudge)
    pairs = [["a", "bbb"], ["cccc", "d"]] * 10
    assert judge.judge(["p"] * 20, pairs, shuffle_order=True) == [1, 0] * 10
    assert judge.judge(["p"] * 2, pairs[:2], shuffle_order=False) == [1, 0]
    skipping = LabelerJudge(lambda prompt, a, b: None)
    assert skipping.judge(["p"], [["a", "b"]]) == [-1]


# -- reward models, both ways -----------------------------------------------------------------------


def trl_config(tmp_path, steps: int) -> RewardConfig:
    return RewardConfig(
        output_dir=str(tmp_path / "trl"),
        bf16=False,
        use_cpu=True,
        report_to="none",
        max_steps=steps,
        per_device_train_batch_size=16,
        learning_rate=3e-3,
        gradient_checkpointing=False,
        save_strategy="no",
        seed=0,
    )


def test_a_trl_reward_model_drives_the_token_env(tmp_path, tokenizer):
    trainer = RewardTrainer(
        model=tiny_reward_model(tokenizer),
        args=trl_config(tmp_path, 30),
        train_dataset=comparisons(64, 0),
        processing_class=tokenizer,
    )
    trainer.train()
    trainer.save_model(str(tmp_path / "trl_rm"))
    ours = HFRewardModel(tmp_path / "trl_rm", device="cpu")
    held_out = comparisons(16, 1)
    assert (
        ours(held_out["prompt"], held_out["chosen"]) > ours(held_out["prompt"], held_out["rejected"])
    ).all()

    env = gym.make(
        "rlhf_envs/TokenEnv-v0",
        model=tiny_lm(tokenizer),
        tokenizer=tokenizer,
        prompts=["the cat was", "the dog was"],
        reward_model=str(tmp_path / "trl_rm"),
        max_new_tokens=4,
        device="cpu",
    )
    env.reset(seed=0)
    terminated = truncated = False
    while not (terminated or truncated):
        _, reward, terminated, truncated, info = env.step(env.action_space.sample())
    expected = ours([info["prompt"]], [info["completion"]])
    assert reward == pytest.approx(float(expected[0]), abs=1e-5)


def test_our_reward_model_loads_where_trl_expects_one(tmp_path, tokenizer):
    lm = tiny_lm(tokenizer)
    lm.save_pretrained(tmp_path / "lm")
    tokenizer.save_pretrained(tmp_path / "lm")
    config = RewardTrainerConfig(learning_rate=3e-3, num_epochs=3, batch_size=16, device="cpu")
    ours = RewardModelTrainer(tmp_path / "lm", train_dataset=comparisons(64, 0), config=config)
    ours.train()
    ours.save(tmp_path / "rm", half=False)
    # TRL takes a reward model by its folder: it evaluates ours and goes on training it.
    trainer = RewardTrainer(
        model=str(tmp_path / "rm"),
        args=trl_config(tmp_path, 2),
        train_dataset=comparisons(32, 3),
        eval_dataset=comparisons(32, 1),
    )
    trainer.evaluate()
    assert trainer.state.log_history[-1]["eval_accuracy"] == 1.0  # TRL logs its metrics
    # TRL's PPO reads rewards with experimental.utils.get_reward: the same scores as ours.
    from trl.experimental.utils import get_reward

    rows = comparisons(4, 2)
    model = trainer.model.eval()
    encoded = encode_texts(tokenizer, rows["prompt"], rows["chosen"], 64, torch.device("cpu"))
    with torch.no_grad():
        _, trl_scores, _ = get_reward(model, encoded["input_ids"], tokenizer.pad_token_id, 0)
    expected = HFRewardModel(tmp_path / "rm", device="cpu")(rows["prompt"], rows["chosen"])
    torch.testing.assert_close(trl_scores, expected, atol=1e-5, rtol=1e-5)
    assert trainer.train().global_step == 2


# -- TRL's options in our reward trainer ------------------------------------------------------------


def fit(dataset: Dataset, offset: float = 0.0, **options) -> dict[str, float]:
    """Train a tiny reward model whose rewards start ``offset`` away from zero (which Bradley–Terry,
    blind to a common shift, keeps); returns the mean gap and the mean reward after training."""
    tokenizer = tiny_tokenizer()
    model = tiny_reward_model(tokenizer)
    with torch.no_grad():  # the score reads the final layer norm: its bias shifts every reward
        weight = model.score.weight[0]
        model.transformer.ln_f.bias += offset * weight / weight.square().sum()
    config = RewardTrainerConfig(learning_rate=3e-3, num_epochs=8, batch_size=16, device="cpu", **options)
    trainer = RewardModelTrainer(model, tokenizer, train_dataset=dataset, eval_dataset=dataset, config=config)
    trainer.train()
    rows = dataset[:]
    chosen = HFRewardModel(trainer.model, trainer.tokenizer, device="cpu")(rows["prompt"], rows["chosen"])
    rejected = HFRewardModel(trainer.model, trainer.tokenizer, device="cpu")(rows["prompt"], rows["rejected"])
    return {"gap": float((chosen - rejected).mean()), "mean": float(torch.cat([chosen, rejected]).mean())}


def test_a_margin_column_widens_the_learned_gap():
    """TRL: with a margin m the loss is −log σ(r_chosen − r_rejected − m): the gap is pushed past m."""
    data = comparisons(48, 0)
    with_margin = data.add_column("margin", [8.0] * len(data))
    plain = fit(data)
    margin = fit(with_margin)
    ignored = fit(with_margin, use_margin=False)
    assert margin["gap"] > plain["gap"] + 1.0
    assert ignored["gap"] == pytest.approx(plain["gap"])


def test_centring_pulls_the_mean_reward_to_zero():
    """TRL's center_rewards_coefficient adds c · mean((r_chosen + r_rejected)²)."""
    data = comparisons(48, 0)
    plain = fit(data, offset=3.0)
    centred = fit(data, offset=3.0, center_rewards_coefficient=0.01)  # TRL's recommended value
    assert abs(centred["mean"]) < 0.1 * abs(plain["mean"])
    assert centred["gap"] > math.log(3)  # still ranks the pairs
    with pytest.raises(ValueError, match="center_rewards_coefficient"):
        RewardTrainerConfig(center_rewards_coefficient=-1.0)
