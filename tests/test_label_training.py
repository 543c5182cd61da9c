"""The labelling app as the labeler of the loops: ``PreferenceTrainer``, ``rlhf-envs demo --human web``."""

from __future__ import annotations

import io
import threading
import time

import gymnasium as gym
import httpx
import pytest
from rich.console import Console
from stable_baselines3 import PPO
from test_demo import PROMPTS
from test_label_server import free_port
from tiny_lm import tiny_lm, tiny_tokenizer

import rlhf_envs  # noqa: F401 - registers the envs
from rlhf_envs.demo import WebLabelling, run_demo
from rlhf_envs.label import LabelSession, WebLabeler
from rlhf_envs.pipeline import DemoConfig
from rlhf_envs.preferences import PreferenceStore
from rlhf_envs.preferences.text import TextPreferenceStore
from rlhf_envs.preferences.trainer import PreferenceConfig, PreferenceTrainer
from rlhf_envs.rewards import LearnedReward, TrajectoryRewardConfig, TrajectoryRewardModel

CAR = "rlhf_envs/CarDriving-v0"
CONFIG = PreferenceConfig(
    total_timesteps=128,
    num_rounds=2,
    label_budget=12,
    segment_length=5,
    rollout_steps=60,
    render=True,
    seed=0,
)


class Person(threading.Thread):
    """Someone at the page who prefers the clip with the higher true return, for up to ``limit`` pairs."""

    def __init__(self, session: LabelSession, limit: int | None = None) -> None:
        super().__init__(daemon=True)
        self.session, self.limit = session, limit
        self.answered: dict[str, str] = {}
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set() and (self.limit is None or len(self.answered) < self.limit):
            pair = self.session.next_pair("oracle")
            if pair is None:
                time.sleep(0.01)
                continue
            left, right = self.session.segments(pair.pair_id)
            difference = left.true_return - right.true_return
            choice = "left" if difference > 0 else "right" if difference < 0 else "tie"
            self.session.answer("oracle", pair.pair_id, choice)
            self.answered[pair.pair_id] = choice


def trainer(session: LabelSession, mode: str) -> PreferenceTrainer:
    env = gym.make(CAR, render_mode="rgb_array")
    reward_model = TrajectoryRewardModel(
        env.observation_space, env.action_space, TrajectoryRewardConfig(epochs=2)
    )
    agent = PPO(
        "MlpPolicy",
        LearnedReward(gym.make(CAR), reward_model),
        n_steps=64,
        batch_size=64,
        n_epochs=1,
        device="cpu",
    )
    labeler = WebLabeler(session, mode, fps=env.metadata["render_fps"], serve=False, timeout=120)
    return PreferenceTrainer(agent, env, reward_model, labeler, config=CONFIG)


def session(tmp_path) -> LabelSession:
    return LabelSession(PreferenceStore(tmp_path / "prefs.jsonl"), undo_seconds=0, clip_format="gif")


def test_sync_rounds_wait_for_every_label_from_the_page(tmp_path):
    labels = session(tmp_path)
    loop = trainer(labels, "sync")
    person = Person(labels)
    person.start()
    reports = loop.train()
    person.stop.set()
    assert [report.labels for report in reports] == [3, 12]
    stored = list(PreferenceStore(labels.store.path))
    assert len(stored) == 12 and all(c.meta["labeler"] == "oracle" for c in stored)
    # What the person chose is what the reward model was fitted on, in the store's label convention.
    wanted = {"left": 1.0, "right": 0.0, "tie": 0.5}
    assert [c.label for c in stored] == [wanted[person.answered[c.meta["pair_id"]]] for c in stored]
    assert [c.label for c in loop.comparisons] == [c.label for c in stored]


def test_async_training_goes_on_and_the_queue_survives_a_restart(tmp_path):
    labels = session(tmp_path)
    person = Person(labels, limit=4)  # labels four pairs, then leaves
    person.start()
    reports = trainer(labels, "async").train()
    person.join(120)
    # Round 0 waited only for the 2 labels a fit needs; the rest of the budget is still queued.
    assert reports[0].labels >= 2 and len(reports) == 2
    assert len(labels.store) == 4 and len(labels.pending) == 12 - 4

    # A new run on the same store and queue: the queued pairs count against its budget, and it
    # takes their labels instead of asking for new pairs.
    reopened = LabelSession(PreferenceStore(labels.store.path), labels.queue_dir, undo_seconds=0)
    assert len(reopened.pending) == 8
    again = trainer(reopened, "sync")
    assert again.labeler.outstanding == 4 + 8  # stored labels and queued pairs: the whole budget
    person = Person(reopened)
    person.start()
    reports = again.train()
    person.stop.set()
    assert [report.labels for report in reports] == [12, 12] and len(again.comparisons) == 12
    assert len(reopened) == 12  # no pair was added in the second run


def test_a_queue_labeler_writes_to_its_own_store(tmp_path):
    with pytest.raises(ValueError, match="pass store=None"):
        PreferenceTrainer(
            trainer(session(tmp_path), "sync").agent,
            gym.make(CAR),
            None,
            WebLabeler(session(tmp_path), serve=False),
            PreferenceStore(tmp_path / "other.jsonl"),
        )


class BrowserPerson(threading.Thread):
    """Someone labelling through the app's JSON API: the left continuation, for up to ``limit`` pairs."""

    def __init__(self, url: str, limit: int | None = None) -> None:
        super().__init__(daemon=True)
        self.url, self.limit = url, limit
        self.labelled = 0
        self.stop = threading.Event()

    def run(self) -> None:
        with httpx.Client(base_url=self.url, timeout=30) as client:
            while not self.stop.is_set() and (self.limit is None or self.labelled < self.limit):
                try:  # the app is not up yet, or already stopped, at either end of the demo
                    pair = client.get("/api/next", params={"labeler": "reader"}).json()["pair"]
                    if pair is not None:
                        label = {"pair_id": pair["pair_id"], "choice": "left", "labeler": "reader"}
                        self.labelled += client.post("/api/labels", json=label).status_code == 201
                        continue
                except httpx.TransportError:
                    pass
                time.sleep(0.05)


@pytest.fixture
def tiny_demo(tmp_path) -> dict:
    """A tiny LM and prompts for ``run_demo``, its quick budget, and a quiet console."""
    tokenizer = tiny_tokenizer()
    tiny_lm(tokenizer).save_pretrained(tmp_path / "lm")
    tokenizer.save_pretrained(tmp_path / "lm")
    (tmp_path / "prompts.txt").write_text("\n".join(PROMPTS) + "\n")
    return {
        "model": str(tmp_path / "lm"),
        "prompts": tmp_path / "prompts.txt",
        "out": tmp_path / "out",
        "config": DemoConfig.quick(),
        "device": "cpu",
        "console": Console(file=io.StringIO(), width=150),
    }


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_demo_human_web_labels_in_the_browser(tiny_demo, mode):
    port = free_port()
    # In async mode the person leaves after 6 of the 16 pairs at most; the demo goes on after 4 labels.
    person = BrowserPerson(f"http://127.0.0.1:{port}", limit=None if mode == "sync" else 6)
    person.start()
    web = WebLabelling(mode, min_labels=4, port=port, undo_seconds=0)
    summary = run_demo(human="web", web=web, **tiny_demo)
    person.stop.set()
    person.join(30)
    store = TextPreferenceStore(tiny_demo["out"] / "preferences.jsonl")
    assert 0 <= summary["reward_model"]["eval_accuracy"] <= 1
    assert all(row["meta"]["labeler"] == "reader" for row in store.records)
    queue = LabelSession(store)
    if mode == "sync":
        assert len(store) == 16 and queue.pending == []
    else:  # the unlabelled pairs wait for the next run
        assert 4 <= person.labelled <= 6
        assert len(store) == person.labelled and len(queue.pending) == 16 - person.labelled
    printed = tiny_demo["console"].file.getvalue()
    assert f"Label at http://127.0.0.1:{port}/" in printed and "labelled in the browser" in printed
