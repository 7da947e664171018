"""Where exported models are kept between runs (``crossformer-infer`` exports on first use)."""
from __future__ import annotations

import os


def cache_dir() -> str:
    d = os.environ.get("CROSSFORMER_DEPLOY_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "crossformer-deploy")
    os.makedirs(d, exist_ok=True)
    return d
