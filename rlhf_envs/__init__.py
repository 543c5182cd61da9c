"""rlhf_envs: Gymnasium environments for reinforcement learning from human feedback.

Importing the package registers every environment under the ``rlhf_envs`` namespace, so
``gym.make("rlhf_envs/TabularMDP-v0")`` works after ``import rlhf_envs`` and
``gym.make("rlhf_envs:rlhf_envs/TabularMDP-v0")`` works without it.
"""

from gymnasium.envs.registration import register, registry

__version__ = "0.1.0"

# Entry points are strings so that importing the package stays cheap: torch models and MuJoCo
# load only when an env is made. max_episode_steps is each env's default horizon N: gym.make's
# TimeLimit truncates the single envs (once: they do not truncate themselves then, see
# rlhf_envs.envs.batched.truncates_itself), and gym.make_vec hands it to the vector envs.
_ENVS = {
    "rlhf_envs/TabularMDP-v0": dict(
        entry_point="rlhf_envs.envs.tabular:TabularMDP",
        vector_entry_point="rlhf_envs.envs.tabular:TabularMDPVectorEnv",
        max_episode_steps=100,
    ),
    "rlhf_envs/CarDriving-v0": dict(
        entry_point="rlhf_envs.envs.car:CarDriving",
        vector_entry_point="rlhf_envs.envs.car:CarDrivingVectorEnv",
        max_episode_steps=50,
    ),
    "rlhf_envs/HalfCheetah-v0": dict(
        entry_point="rlhf_envs.rewards.entry_points:make_half_cheetah",
        max_episode_steps=1000,
    ),
    "rlhf_envs/TokenEnv-v0": dict(
        entry_point="rlhf_envs.envs.token:TokenEnv",
        vector_entry_point="rlhf_envs.envs.token:TokenVectorEnv",
    ),
}

for _env_id, _spec in _ENVS.items():
    if _env_id not in registry:
        register(id=_env_id, **_spec)

ENV_IDS: tuple[str, ...] = tuple(_ENVS)

# Public names that import torch are loaded on first use, keeping `import rlhf_envs` cheap.
_LAZY = {"LearnedReward": "rlhf_envs.rewards.learned", "VectorLearnedReward": "rlhf_envs.rewards.learned"}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'rlhf_envs' has no attribute {name!r}")


__all__ = ["ENV_IDS", "LearnedReward", "VectorLearnedReward", "__version__"]
