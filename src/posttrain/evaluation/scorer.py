"""Moved to ``posttrain.scoring.scorer``; this name stays for code written against the old path."""

from ..scoring.scorer import *  # noqa: F401,F403
from ..scoring.scorer import _pad, _progress, selected_logits  # noqa: F401
