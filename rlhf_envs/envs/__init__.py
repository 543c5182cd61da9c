"""The environments (layer 2: imports lm only), one file each; see each module's docstring for its MDP.

The tabular, car and token envs are each a batched core behind a single and a vector face
(:mod:`~rlhf_envs.envs.batched` holds the contract); HalfCheetah reuses Gymnasium's MuJoCo env.
"""
