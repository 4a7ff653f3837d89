"""The method registry: every way of choosing what trains (``adapter.type``) is one ``Method`` value.

Each method file under ``methods/`` builds its ``Method`` and ``methods/__init__.py`` registers it, once. Config
validation, the engine, run loading and run metadata look the method up here and ask it (its checks, how it
wraps a model, its optimizer groups, how a finished run's weights load, what it can be combined with); none of
them branches on a method's name. This module sits at the bottom of the package (it imports only ``errors``), so
``config`` can consult methods without importing them; ``import posttrain`` imports ``posttrain.methods``, whose
``__init__`` registers every method, before anything can look one up. Adding a method means adding its file and
one line in ``methods/__init__.py``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional

from .errors import ConfigError, did_you_mean

FAMILIES = ("causal", "seq2seq", "encoder")  # models.families.model_kind's answers


def _no_checks(cfg) -> None:
    return None


def _nothing_to_describe(cfg) -> dict:
    return {}


@dataclass(frozen=True)
class Method:
    """What posttrain needs from one trainable-parameter method; see each method's file for its paper and math.

    ``wrap(model, cfg, tokenizer)`` returns the model with exactly the method's parameters trainable (wrapped where
    the method adds parameters); ``restore(final_dir, model_cfg, for_training, num_labels)`` loads a finished run's
    ``final/`` as ``(model, tokenizer)``; ``validate(cfg)`` raises ``ConfigError("section.key: ...")`` for a
    combination the method cannot run, before any model loads; ``optimizer_groups(model, cfg)`` gives parameter
    groups with their own learning rates (``None``: every trainable parameter at ``train.learning_rate``).
    """

    name: str
    summary: str  # one line naming the paper
    settings: tuple[str, ...]  # the adapter.* keys the method reads
    wrap: Callable
    restore: Callable
    validate: Callable = _no_checks
    optimizer_groups: Optional[Callable] = None
    weights_file: Optional[str] = None  # the file in a run's final/ that marks the method's weights (None: a
    #                                    whole model directory)
    describe: Callable = _nothing_to_describe  # the method's named choices, for run_meta.json
    resolved: Callable = _nothing_to_describe  # (wrapped model) -> what the choices became on it, for run_meta.json
    families: tuple[str, ...] = FAMILIES  # model kinds it supports (models.families.model_kind)
    kl_reference: Optional[str] = None  # how the KL baseline gets the starting model: "frozen_copy",
    #                                     "adapter_disabled", or None (not supported)
    noisy_embeddings: bool = False  # NEFTune can noise the token embeddings the model reads
    trains_embedding_rows: bool = False  # new vocabulary rows train with it (DART-lite soft prompts)
    packing: bool = False  # padding-free packed batches are allowed
    feeds_embeddings: bool = False  # the model gets input embeddings (a soft prompt in front), not token ids
    fits_model: Optional[Callable] = None  # (cfg, transformers config) -> raise ConfigError for a size it cannot take


METHODS: dict[str, Method] = {}


def register(method: Method) -> Method:
    if method.name in METHODS:
        raise ValueError(f"method {method.name!r} is registered twice")
    if not set(method.families) <= set(FAMILIES):
        raise ValueError(f"method {method.name!r}: families must be among {FAMILIES}, got {method.families}")
    METHODS[method.name] = method
    return method


def method_named(name: str, key: str = "adapter.type") -> Method:
    """The registered method, or a one-line ConfigError naming the choices and the nearest one."""
    if name in METHODS:
        return METHODS[name]
    raise ConfigError(f"{key}: expected one of {', '.join(METHODS)}, got {name!r}{did_you_mean(name, METHODS, 0.6)}")
