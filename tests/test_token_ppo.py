"""PPO on the TokenEnv: the LM policy with a value head, the KL penalty, saving as a Hugging Face model."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from tiny_lm import tiny_lm, tiny_reward_model, tiny_tokenizer
from transformers import AutoModelForCausalLM, AutoTokenizer

from agents import TokenPPO
from agents.token_policy import PackedTokenObservations, TokenActorCritic, per_length_bucket
from rlhf_envs.envs.token import TokenVectorEnv
from rlhf_envs.lm.reward_model import HFRewardModel

PROMPTS = ["the cat sat", "a good day makes", "love and joy", "in the beginning"]
#: Token ids that the reward counts: about 10% of the tiny vocabulary.
REWARDED = 30


def share_reward(tokenizer):
    """The share of a completion's tokens whose id is below ``REWARDED``: a programmatic reward model."""

    def reward(prompts: list[str], completions: list[str]) -> torch.Tensor:
        ids = tokenizer(completions)["input_ids"]
        return torch.tensor([float(np.mean([i < REWARDED for i in row])) if row else 0.0 for row in ids])

    return reward


def make_env(
    tokenizer,
    num_envs: int = 32,
    max_new_tokens: int = 8,
    stop_at_eos: bool = False,
    reward_model=None,
    **kwargs,
):
    return TokenVectorEnv(
        num_envs,
        model=tiny_lm(tokenizer),
        tokenizer=tokenizer,
        prompts=PROMPTS,
        reward_model=share_reward(tokenizer) if reward_model is None else reward_model,
        max_new_tokens=max_new_tokens,
        stop_at_eos=stop_at_eos,
        device="cpu",
        **kwargs,
    )


def test_ppo_raises_the_reward_well_above_the_reference_with_bounded_kl(tokenizer):
    env = make_env(tokenizer)
    agent = TokenPPO(
        env, device="cpu", n_steps=8, batch_size=64, learning_rate=1e-2, kl_coef=0.2, kl_target=None
    )
    assert isinstance(agent.policy, TokenActorCritic) and agent.gamma == 1.0
    agent.learn(8 * 32 * 24, progress_bar=False)
    history = agent.kl_penalty.history
    scores, kls = [stats.score for stats in history], [stats.kl for stats in history]
    assert kls[0] == pytest.approx(0.0, abs=1e-3)  # the first rollout samples π = π_pt
    # The reference puts ~5% of its tokens in the rewarded set; the fine-tuned policy several times that.
    assert np.mean(scores[-5:]) > scores[0] + 0.2, np.round(scores, 2)
    # With β = 0.2 on a whitened reward the KL levels off (about 5 nats) instead of growing to the
    # ~20 nats that a policy writing only rewarded tokens would need.
    assert max(kls[12:]) < 10.0, np.round(kls, 1)


@pytest.mark.parametrize("split", [False, True], ids=["buckets-as-they-fall", "always-split"])
@pytest.mark.parametrize("follow", [False, True], ids=["windows-compared", "env-flags"])
def test_sampling_log_probs_match_evaluate_across_restarts(tokenizer, follow, split, monkeypatch):
    """The KV-cached sampler and the one-pass-per-episode evaluation compute the same π, also after
    the env restarts episodes mid-rollout and after the cache is dropped for an update (then, following
    the env, it prefills the new episodes' prompts and the running ones' windows); whether the sampler
    finds the restarted episodes by comparing windows or from the env's host flags, and whether the
    prefills and the evaluation run windows of different lengths in one pass or in one per length (length
    buckets). V of the last observation agrees too, from the cache or from a full pass."""
    if split:
        monkeypatch.setattr("rlhf_envs.envs.token.PASS_COST_TOKENS", 0)
    torch.manual_seed(0)
    env = PackedTokenObservations(
        make_env(
            tokenizer,
            6,
            5,
            stop_at_eos=True,
            as_tensors=True,
            autoreset_mode="same_step",
            reference_scoring="per_step",
        )
    )
    policy = TokenActorCritic(env.unwrapped.reference_model, tokenizer)
    if follow:
        policy.follow(env)
    packed, _ = env.reset(seed=0)
    for steps in (12, 14):
        observations, actions, logprobs, dones, kls = [], [], [], [], []
        for _ in range(steps):  # more steps than an episode: rows restart within the block
            action, logprob, _ = policy.act(packed)
            observations.append(packed)
            packed, _, terminated, truncated, info = env.step(action)
            actions.append(action)
            logprobs.append(logprob)
            dones.append(terminated | truncated)
            kls.append(logprob - info["ref_logprob"])
        done = torch.stack(dones)
        assert done.sum() >= 6
        # V after the block's last step: one decoding step on the sampling cache when the policy follows
        # the env (then the cache is dropped, as for an update), a full pass over a copy of the windows.
        # PPO's bootstrap value (second block) is V where the episode goes on, 0 where it just ended.
        full_pass = policy.value(packed.clone())
        if steps == 12:
            torch.testing.assert_close(policy.value(packed), full_pass, atol=1e-5, rtol=0)
        else:
            assert 0 < done[-1].sum() < 6  # some episodes go on, some restarted: both kinds of rows
            bootstrap = policy.bootstrap_value(packed, done[-1])
            torch.testing.assert_close(bootstrap, full_pass.masked_fill(done[-1], 0.0), atol=1e-5, rtol=0)
        evaluated, entropy, value = policy.evaluate(torch.stack(observations), torch.stack(actions), done)
        torch.testing.assert_close(evaluated, torch.stack(logprobs), atol=1e-5, rtol=0)
        # The policy is still the reference: its log-probs are the env's π_pt.
        torch.testing.assert_close(torch.stack(kls), torch.zeros(steps, 6), atol=1e-5, rtol=0)
        assert entropy.shape == value.shape == (steps, 6)


def test_deferred_and_per_step_reference_scoring_give_ppo_the_same_kl(tokenizer):
    """Issue 15: with the env's default (deferred) reference scoring PPO reads log π_pt of each token
    from the end of its episode, or, for the episodes still running at the rollout's end, from one
    batched pass then; the per-token KL it penalizes equals the per-step scoring's within 1e-5,
    rollout after rollout of a policy that moves away from the reference."""
    options = dict(device="cpu", seed=2, n_steps=5, batch_size=40, learning_rate=1e-2)
    options |= dict(kl_coef=0.2, kl_target=None)
    rollout = 5 * 8  # episodes of up to 7 tokens straddle rollouts of 5 steps

    def run(scoring: str) -> tuple[TokenPPO, list[torch.Tensor], list[torch.Tensor]]:
        env = make_env(tokenizer, num_envs=8, max_new_tokens=7, stop_at_eos=True, reference_scoring=scoring)
        agent = TokenPPO(env, **options)
        ref_logprobs, kls = [], []
        for iteration in range(4):
            agent.learn(rollout, progress_bar=False, reset_num_timesteps=iteration == 0)
            ref_logprobs.append(agent.kl_penalty.ref_logprobs.clone())
            kls.append(agent.kl_penalty.kl.clone())
        return agent, ref_logprobs, kls

    per_step, expected_ref_logprobs, expected_kls = run("per_step")
    deferred, ref_logprobs, kls = run("auto")
    assert not deferred.env.unwrapped.core.per_step_reference  # kl_coef=0: deferred
    torch.testing.assert_close(ref_logprobs, expected_ref_logprobs, atol=1e-5, rtol=0)
    torch.testing.assert_close(kls[0], expected_kls[0], atol=1e-5, rtol=0)
    # Later rollouts sample from policies trained on those rounding differences: as close, or nearly.
    torch.testing.assert_close(kls, expected_kls, atol=1e-4, rtol=0)
    assert per_step.kl_penalty.history[-1].kl > 0.05  # the policy has left the reference
    scores = [[stats.score for stats in agent.kl_penalty.history] for agent in (per_step, deferred)]
    assert scores[0] == scores[1]


def reward_model_env(tokenizer, **kwargs) -> TokenVectorEnv:
    """An env whose reward model is a tiny decoder-only r_φ over the env's own tokenizer."""
    reward_model = HFRewardModel(tiny_reward_model(tokenizer), tokenizer, device="cpu")
    return make_env(tokenizer, reward_model=reward_model, **kwargs)


@pytest.mark.parametrize("trailing", [(), (3,)])
def test_per_length_bucket_runs_each_length_group_over_its_own_width_in_the_rows_order(trailing):
    """On the CPU a batch of long and short left-padded windows runs as one pass per length group, each
    over its longest window: the real tokens' outputs are those of one pass over the whole batch, in
    the batch's row order, and the columns left of a group's width are zero, for [n, w] and
    [n, w, ...] outputs."""
    lengths = [40, 2, 40, 3, 40, 2, 40, 40]
    sequences = torch.full((len(lengths), 40), -1)
    for row, length in enumerate(lengths):
        sequences[row, 40 - length :] = torch.arange(length) + 100 * row
    widths = []

    def forward(packed: torch.Tensor) -> torch.Tensor:
        widths.append(packed.shape[1])
        return packed.float().reshape(*packed.shape, *(1,) * len(trailing)).expand(*packed.shape, *trailing)

    output = per_length_bucket(forward, sequences)
    assert sorted(widths) == [3, 40]
    whole = forward(sequences)
    real = sequences >= 0
    torch.testing.assert_close(output[real], whole[real], atol=0, rtol=0)
    short = torch.tensor(lengths) < 40
    assert (output[short][:, :-3] == 0).all()


def test_reward_model_critic_values_every_window_by_r_phi_and_credits_each_token(tokenizer):
    """With ``critic="reward_model"`` V(s_t) is r_φ of step t's window (prompt and tokens so far, the
    model's own score of those ids) in the whitened reward's units, across episodes that end and
    restart mid-rollout; λ = 0 by default, so each token's advantage is the change of r_φ it made
    less its KL penalty, and the advantages of a whole episode sum to its whitened score less V of
    its prompt and its KL penalty. No value loss: the value head is not trained."""
    env = reward_model_env(tokenizer, num_envs=6, max_new_tokens=5, stop_at_eos=True)
    agent = TokenPPO(env, device="cpu", seed=3, n_steps=12, batch_size=72, kl_coef=0.2, critic="reward_model")
    assert agent.config.vf_coef == 0.0 and agent.config.gae_lambda == 0.0
    head = agent.policy.value_head.weight.detach().clone()
    agent.learn(12 * 6 * 2, progress_bar=False)
    torch.testing.assert_close(agent.policy.value_head.weight, head, atol=0, rtol=0)

    buffer, classifier = agent.buffer, env.reward_model.model
    mean, std = agent.kl_penalty.reward_scale
    assert std != 1.0  # the rollout's scores were whitened
    for step in range(12):
        for column in range(6):
            window = buffer.obs[step, column]
            with torch.no_grad():
                own = classifier(input_ids=window[window >= 0][None]).logits[0, 0]
            torch.testing.assert_close(buffer.values[step, column], (own - mean) / std, atol=1e-5, rtol=0)
    dones = buffer.dones.bool()
    assert dones[:-1].any()  # some episode ended mid-rollout and another started in its column
    next_values = torch.cat([buffer.values[1:], buffer.values[-1:]])  # the last row is checked below
    one_step = buffer.rewards[:-1] + next_values[:-1] * ~dones[:-1] - buffer.values[:-1]
    torch.testing.assert_close(buffer.advantages[:-1], one_step, atol=1e-5, rtol=0)
    # An episode that starts and ends within the rollout: the advantages telescope.
    starts = torch.cat([torch.ones(1, 6, dtype=torch.bool), dones[:-1]])
    step_ends, columns = dones.nonzero(as_tuple=True)
    checked = 0
    for end, column in zip(step_ends.tolist(), columns.tolist(), strict=True):
        start = int(starts[: end + 1, column].nonzero()[-1, 0])
        if start == 0:
            continue  # it may have begun in the rollout before
        span = slice(start, end + 1)
        expected = buffer.rewards[span, column].sum() - buffer.values[start, column]
        torch.testing.assert_close(buffer.advantages[span, column].sum(), expected, atol=1e-4, rtol=0)
        checked += 1
    assert checked


def test_reward_model_critic_learns_and_is_refused_where_it_cannot_read_the_envs_tokens(tokenizer):
    env = reward_model_env(tokenizer)
    agent = TokenPPO(
        env, device="cpu", n_steps=8, batch_size=64, learning_rate=1e-2, kl_coef=0.2, critic="reward_model"
    )
    agent.learn(8 * 32 * 16, progress_bar=False)
    scores = [stats.score for stats in agent.kl_penalty.history]
    # The tiny r_φ's scores spread over about ±0.05 under π_pt; the policy moves its mean up by more.
    assert np.mean(scores[-4:]) > np.mean(scores[:2]) + 0.04, np.round(scores, 3)

    with pytest.raises(ValueError, match="does not score every token"):
        TokenPPO(make_env(tokenizer), device="cpu", critic="reward_model")  # a plain callable
    other = tiny_tokenizer(vocab_size=280)
    foreign = HFRewardModel(tiny_reward_model(other), other, device="cpu")
    with pytest.raises(ValueError, match="different vocabularies"):
        TokenPPO(make_env(tokenizer, reward_model=foreign), device="cpu", critic="reward_model")
    with pytest.raises(ValueError, match="critic must be one of"):
        TokenPPO(make_env(tokenizer), device="cpu", critic="q_head")


def test_extra_actions_are_credited_by_r_phi_of_the_text_with_them_and_enter_the_loss(tokenizer):
    """``extra_actions=k``: at every state of the rollout k more tokens drawn from π_old, each with the
    advantage r̂_φ(window + token) − β (log π_old − log π_pt)(token) − r̂_φ(window) (r̂_φ whitened as the
    rewards; an EOS leaves the text, so r̂_φ(window)), across episodes that end and restart; the PPO loss
    reads log π of the k + 1 tokens of each step. Learning rate 0 keeps π_θ = π_old for the check."""
    env = reward_model_env(tokenizer, num_envs=6, max_new_tokens=5, stop_at_eos=True)
    agent = TokenPPO(
        env,
        device="cpu",
        seed=3,
        n_steps=12,
        batch_size=72,
        kl_coef=0.2,
        learning_rate=0.0,
        critic="reward_model",
        extra_actions=16,  # enough draws that an EOS is among them
    )
    evaluated = []
    evaluate = agent.policy.evaluate
    agent.policy.evaluate = lambda obs, action, dones: (
        evaluated.append(action.shape) or evaluate(obs, action, dones)
    )
    agent.learn(12 * 6, progress_bar=False)
    assert evaluated and set(evaluated) == {(12, 6, 17)}

    buffer, classifier, reference = agent.buffer, env.reward_model.model, env.reference_model
    tokens, logprobs, advantages = (buffer.alternatives[key] for key in ("actions", "logprobs", "advantages"))
    assert tokens.shape == logprobs.shape == advantages.shape == (12, 6, 16)
    assert buffer.dones[:-1].any()  # some episode ended mid-rollout and another started in its column
    mean, std = agent.kl_penalty.reward_scale
    beta = agent.kl_penalty.history[-1].kl_coef
    policy = agent.policy.language_model
    eos_seen = 0
    with torch.no_grad():
        for step in range(12):
            for column in range(6):
                window = buffer.obs[step, column]
                window = window[window >= 0]
                own = torch.log_softmax(policy(input_ids=window[None]).logits[0, -1], -1)
                ref = torch.log_softmax(reference(input_ids=window[None]).logits[0, -1], -1)
                for j, token in enumerate(tokens[step, column].tolist()):
                    if token == tokenizer.eos_token_id:
                        next_value = buffer.values[step, column]
                        eos_seen += 1
                    else:
                        text = torch.cat([window, torch.tensor([token])])[None]
                        next_value = (classifier(input_ids=text).logits[0, 0] - mean) / std
                    torch.testing.assert_close(logprobs[step, column, j], own[token], atol=1e-5, rtol=0)
                    expected = next_value - beta * (own[token] - ref[token]) - buffer.values[step, column]
                    torch.testing.assert_close(advantages[step, column, j], expected, atol=1e-4, rtol=0)

    assert eos_seen  # an EOS among the tokens not taken, valued at the text without it
    for options, match in [
        ({"critic": "value_head"}, "extra_actions needs critic='reward_model'"),
        ({"critic": "reward_model", "gae_lambda": 0.95}, "gae_lambda=0"),
        ({"critic": "reward_model", "extra_actions": -1}, "extra_actions must be >= 0"),
        ({"critic": "reward_model", "kl_coef": None, "kl_target": None}, "needs the agent's KL penalty"),
    ]:
        with pytest.raises(ValueError, match=match):
            TokenPPO(reward_model_env(tokenizer), device="cpu", **{"extra_actions": 2, **options})


def test_extra_actions_learn_and_the_same_seed_gives_the_same_run(tokenizer):
    def run(seed: int) -> list[float]:
        agent = TokenPPO(
            reward_model_env(tokenizer),
            device="cpu",
            seed=seed,
            n_steps=8,
            batch_size=64,
            learning_rate=3e-3,
            kl_coef=0.2,
            critic="reward_model",
            extra_actions=4,
        )
        agent.learn(8 * 32 * 12, progress_bar=False)
        return [stats.score for stats in agent.kl_penalty.history]

    scores = run(0)
    # r_φ's mean per rollout of 32 episodes moves by ~0.02 from noise alone: the later half against the start.
    assert np.mean(scores[-6:]) > np.mean(scores[:2]) + 0.025, np.round(scores, 3)
    assert run(0) == scores


@pytest.mark.parametrize("shard", [False, True])
def test_the_policy_samples_tokens_with_their_probabilities(tokenizer, shard):
    """Inverse transform sampling draws each token with its probability (and never one of probability
    0), alone or as rows 2..4 of a bigger batch (data-parallel sampling)."""
    policy = TokenActorCritic(tiny_lm(tokenizer), tokenizer)
    if shard:
        policy.sample_as_shard(slice(2, 5), total_rows=6, seed=0)
    probabilities = torch.tensor([0.5, 0.0, 0.3, 0.2, 0.0])
    logprobs = probabilities.log().expand(3, 5)
    torch.manual_seed(0)
    tokens = torch.cat([policy._sample(logprobs) for _ in range(4000)])
    frequencies = torch.bincount(tokens, minlength=5) / len(tokens)
    torch.testing.assert_close(frequencies, probabilities, atol=0.01, rtol=0)
    assert frequencies[1] == frequencies[4] == 0
    # Several tokens at once from each distribution of a [T, B, V] batch (the PPO's extra actions).
    tokens = policy.sample_tokens(logprobs.expand(1000, 3, 5), 4)
    assert tokens.shape == (1000, 3, 4)
    frequencies = torch.bincount(tokens.flatten(), minlength=5) / tokens.numel()
    torch.testing.assert_close(frequencies, probabilities, atol=0.01, rtol=0)


def test_saved_policy_reloads_with_from_pretrained_and_generates(tokenizer, tmp_path):
    agent = TokenPPO(make_env(tokenizer), device="cpu", n_steps=8, batch_size=64, learning_rate=1e-2)
    agent.learn(8 * 32, progress_bar=False)
    agent.save_pretrained(tmp_path / "policy")
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "policy")
    loaded_tokenizer = AutoTokenizer.from_pretrained(tmp_path / "policy")
    for name, tensor in agent.policy.model.state_dict().items():
        torch.testing.assert_close(model.state_dict()[name], tensor)
    encoded = loaded_tokenizer(["the cat sat"], return_tensors="pt")
    output = model.generate(**encoded, max_new_tokens=4, do_sample=False, pad_token_id=tokenizer.pad_token_id)
    assert output.shape == (1, encoded["input_ids"].shape[1] + 4)
    reloaded = TokenActorCritic.from_pretrained(tmp_path / "policy")
    torch.testing.assert_close(reloaded.value_head.weight, agent.policy.value_head.weight)


def test_token_env_defaults_and_user_options(tokenizer):
    agent = TokenPPO(make_env(tokenizer), device="cpu", kl_coef=0.3, kl_target=None)
    assert agent.config.bootstrap_truncated is False and agent.config.whiten_rewards is True
    assert agent.kl_penalty.controller.value == 0.3 and not hasattr(agent.kl_penalty.controller, "target")
    # The reference model in the env stays frozen: the policy trains a copy.
    assert agent.policy.model is not agent.env.unwrapped.reference_model
    with pytest.raises(ValueError, match="kl_target needs kl_coef"):
        TokenPPO(make_env(tokenizer), device="cpu", kl_coef=None)
    with pytest.raises(ValueError, match="already adds"):
        TokenPPO(make_env(tokenizer, kl_coef=0.1), device="cpu")


def test_interrupted_and_resumed_run_equals_a_straight_run(tokenizer, tmp_path):
    """A checkpoint mid-episode (n_steps < episode length) holds the env, the policy and β: loading it
    and training on repeats the uninterrupted run bit for bit on the CPU."""
    options = dict(device="cpu", seed=3, n_steps=4, batch_size=32, learning_rate=1e-2)
    options |= dict(kl_coef=0.2, kl_target=1.0, kl_horizon=50)  # β moves after every rollout

    def new_env():
        return make_env(tokenizer, num_envs=8, max_new_tokens=6, stop_at_eos=True)

    rollout = 4 * 8
    straight = TokenPPO(new_env(), **options).learn(3 * rollout, progress_bar=False)
    first = TokenPPO(new_env(), **options).learn(2 * rollout, progress_bar=False)
    first.save(tmp_path / "checkpoint.pt")
    resumed = TokenPPO.load(tmp_path / "checkpoint.pt", env=new_env(), device="cpu")
    assert resumed.kl_penalty.controller.value == first.kl_penalty.controller.value != 0.2
    resumed.learn(rollout, progress_bar=False, reset_num_timesteps=False)

    assert resumed.num_timesteps == straight.num_timesteps == 3 * rollout
    assert resumed.kl_penalty.history == straight.kl_penalty.history
    for name, tensor in straight.policy.state_dict().items():
        assert torch.equal(resumed.policy.state_dict()[name], tensor), name


@pytest.mark.slow  # about 40 s on a 2-core CPU: three rollouts of 64 × 32 tokens of the embedded LM
def test_cli_resumes_token_ppo_to_the_total_with_beta(tmp_path, capsys):
    from rlhf_envs.cli import main

    args = ["train", "--env", "rlhf_envs/TokenEnv-v0", "--agent", "ppo", "--device", "cpu"]
    args += ["--logdir", str(tmp_path)]
    assert main([*args, "--steps", "2048"]) == 0
    beta = torch.load(tmp_path / "checkpoint.pt", weights_only=False)["kl_penalty"]["kl_coef"]
    assert main([*args, "--steps", "4096", "--resume"]) == 0
    assert "2048 env steps" in capsys.readouterr().out
    saved = torch.load(tmp_path / "checkpoint.pt", weights_only=False)
    assert saved["algorithm"] == "TokenPPO" and saved["num_timesteps"] == 4096
    # The resumed rollout penalized the KL with the β the first run ended with.
    assert [stats.kl_coef for stats in saved["kl_penalty"]["history"]][1] == beta != 0.2


def test_bf16_autocast_runs_policy_and_reference_in_bfloat16_on_float32_weights(tokenizer):
    """``bf16=True`` (meant for a GPU; autocast works on the CPU too): both forwards compute in bfloat16,
    the trained weights stay float32, and the first rollout still samples π = π_pt (KL ≈ 0)."""
    agent = TokenPPO(
        make_env(tokenizer, num_envs=8, max_new_tokens=4),
        device="cpu",
        n_steps=4,
        batch_size=32,
        kl_coef=0.2,
        kl_target=None,
        bf16=True,
    )
    seen = set()
    models = {"policy": agent.policy.language_model, "reference": agent.env.unwrapped.reference_model}
    for name, model in models.items():
        model.transformer.h[0].attn.c_attn.register_forward_hook(
            lambda module, inputs, output, name=name: seen.add((name, output.dtype))
        )
    agent.learn(2 * 32, progress_bar=False)
    assert seen == {("policy", torch.bfloat16), ("reference", torch.bfloat16)}
    assert {param.dtype for param in agent.policy.parameters()} == {torch.float32}
    assert agent.kl_penalty.history[0].kl == pytest.approx(0.0, abs=0.05)
