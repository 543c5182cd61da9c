"""The environments (layer 2: imports lm only): one file per environment, each a batched core behind
a single and a vector face (:mod:`~rlhf_envs.envs.batched` holds the contract); see each module's
docstring for its MDP."""
