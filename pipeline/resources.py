"""Where the model artifacts (``models/``: trained heads, lexicons, cards) are found at run time.

``models/`` is the project's artifact folder, beside the package in a checkout. An editable install
reads it there; a built wheel carries a copy as data files under ``<prefix>/share/callpulse/models``
(setup.cfg ``[options.data_files]``), so ``pip install callpulse-*.whl`` on another machine finds its
emotion model and lexicons without the checkout. ``$CALLPULSE_MODELS`` overrides both.
"""
from __future__ import annotations

import os
import sys
import sysconfig
from pathlib import Path

from .errors import ModelUnavailableError

_CHECKOUT_MODELS = Path(__file__).resolve().parents[1] / "models"


def _installed_candidates() -> list[Path]:
    # The data scheme of the running interpreter (a venv's prefix), then the user scheme.
    roots = [Path(sysconfig.get_paths()["data"]), Path(sys.prefix)]
    try:
        roots.append(Path(sysconfig.get_paths(scheme=f"{os.name}_user")["data"]))
    except KeyError:
        pass
    return [root / "share" / "callpulse" / "models" for root in roots]


def models_root() -> Path:
    """The folder holding model artifacts: $CALLPULSE_MODELS, the checkout's ``models/``, or the wheel's copy."""
    env = os.environ.get("CALLPULSE_MODELS")
    if env:
        return Path(env)
    if _CHECKOUT_MODELS.is_dir():
        return _CHECKOUT_MODELS
    for candidate in _installed_candidates():
        if candidate.is_dir():
            return candidate
    raise ModelUnavailableError(
        "callpulse's model folder was not found: not beside the package "
        f"({_CHECKOUT_MODELS}) nor installed as data ({', '.join(map(str, _installed_candidates()))}); "
        "reinstall callpulse from its wheel or checkout, or set $CALLPULSE_MODELS to a folder holding "
        "emotion/ and text/"
    )
