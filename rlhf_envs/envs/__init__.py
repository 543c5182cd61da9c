"""One file per environment; see each module's docstring for its MDP."""
