"""Label preferences in the browser: a local web app over a preference store (``rlhf-envs label``).

- ``LabelSession``: the pairs waiting for labels (kept on disk, so they survive a restart), who is
  labelling which, and the answers, written to a ``PreferenceStore`` or ``TextPreferenceStore``.
- ``create_app``: the FastAPI app (page and JSON API) over a session; ``serve`` runs it with uvicorn.
- ``WebLabeler``: the app as the labeler of a training loop, synchronous or asynchronous.
"""

from rlhf_envs.label.app import create_app
from rlhf_envs.label.command import serve
from rlhf_envs.label.labeler import WebLabeler
from rlhf_envs.label.session import CHOICES, Answer, LabelConflict, LabelSession, Pair, UnknownPair

__all__ = [
    "CHOICES",
    "Answer",
    "LabelConflict",
    "LabelSession",
    "Pair",
    "UnknownPair",
    "WebLabeler",
    "create_app",
    "serve",
]
