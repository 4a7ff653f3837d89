"""Which run configurations a model family supports, decided before the model's weights load.

A family is ``models.families.config_kind``'s answer from the model's config: ``causal`` (decoder-only: Llama,
Qwen, Mistral, Gemma, GPT-2, Phi), ``seq2seq`` (encoder-decoder: T5, Flan-T5, mT5, BART) or ``encoder``
(bidirectional: BERT, RoBERTa, DeBERTa, ELECTRA). Each piece of a run declares the families it means something for:

- the trainable-parameter method: ``Method.families`` (registry);
- what the run trains on: instruction data and the label word's next-token loss (``task.objective: lm``) need a
  model that predicts tokens left to right, so a decoder (decoder-only, or the decoder of an encoder-decoder);
  the verbalizer and classifier objectives work on every family (``Objective.families``), except that a soft
  prompt cannot reach an encoder-decoder's classification head (``Objective.embeddings_families``);
- loss choices that only make sense on a decoder-only model: the IM loss over instruction tokens (an
  encoder-decoder's decoder never predicts the instruction, ``data/seq2seq.py``), padding-free packing, NEFTune
  (it noises the shared input embeddings, which an encoder-decoder's decoder reads too) and KL regularisation
  (its token alignment is the decoder-only one).

``refusal(cfg, kind)`` gives the first unsupported choice as one line naming the key and what is supported
instead; ``check`` raises it. The support table (``docs/model_support.md``) is generated from the same rules
by the architecture matrix (``benchmarks/model_matrix.py``).
"""

from __future__ import annotations

import dataclasses

from .config import RunConfig
from .errors import ConfigError
from .methods.objectives import OBJECTIVES
from .registry import method_named

DECODING = ("causal", "seq2seq")  # families with a decoder that predicts tokens left to right
NAMES = {"causal": "decoder-only", "seq2seq": "encoder-decoder", "encoder": "encoder"}


def _names(kinds) -> str:
    return ", ".join(NAMES[k] for k in kinds)


def refusal(cfg: RunConfig, kind: str) -> str | None:
    """Why ``cfg`` cannot run on a ``kind`` model (one line), or None when it can."""
    family = NAMES[kind]
    method = method_named(cfg.adapter.type)
    if kind not in method.families:
        return (f"adapter.type: {method.name} does not support {family} models; it supports "
                f"{_names(method.families)}")
    task, loss, train = cfg.task, cfg.loss, cfg.train
    if task.name:
        objective = OBJECTIVES.get(task.objective)
        families = objective.families if objective is not None else DECODING
        if kind not in families:
            supported = [name for name, o in OBJECTIVES.items() if kind in o.families]
            return (f"task.objective: {task.objective} predicts the label word left to right, which {family} models "
                    f"do not do; use task.objective {' or '.join(supported)}")
        if objective is not None and method.feeds_embeddings and kind not in objective.embeddings_families:
            return (f"adapter.type: {method.name} feeds a soft prompt as input embeddings, which transformers' "
                    f"{family} {task.objective} models do not accept; use adapter.type full or lora, or "
                    "task.objective verbalizer or lm")
    elif kind not in DECODING:
        return (f"data.train_file: instruction data trains a model to generate its answers; {family} models do not "
                f"generate (use a decoder-only or encoder-decoder model, or a task with task.objective verbalizer "
                "or classifier)")
    if kind != "causal" and loss.mode != "output_only":
        return (f"loss.mode: {loss.mode} puts loss on instruction tokens, which the decoder of an {family} model "
                "never predicts (the instruction is the encoder's input); only output_only (IT) is supported")
    if kind == "seq2seq" and cfg.data.padding_side == "left":
        return ("data.padding_side: encoder-decoder inputs are padded on the right (with left padding BART's learned "
                "positions and a soft prompt's distance to the text move with the padding)")
    if kind != "causal" and train.packing is True:
        return f"train.packing: padding-free batches are for decoder-only models, not {family} ones"
    if kind != "causal" and train.neftune_alpha > 0:
        return f"train.neftune_alpha: NEFTune is supported on decoder-only models, not {family} ones"
    if kind != "causal" and loss.kl_coef > 0:
        return f"loss.kl_coef: KL regularisation is supported on decoder-only models, not {family} ones"
    return None


def packing_off(cfg: RunConfig, kind: str | None) -> str | None:
    """Why ``train.packing: auto`` leaves a run's batches padded (one line), or None when it packs them. ``kind``
    None: the model's family is not known yet (its config could not be read before loading)."""
    method = method_named(cfg.adapter.type)
    if cfg.task.name:
        return "task data: short labelled examples are scored in padded batches"
    if not method.packing:
        return f"adapter.type {method.name}: each example needs its own soft prompt in front of it"
    if kind is not None and kind != "causal":
        return f"{NAMES[kind]} models: padding-free batches are for decoder-only models"
    if cfg.data.pad_to_max_length:
        return "data.pad_to_max_length is on"
    if cfg.train.group_by_length:
        return "train.group_by_length is on"
    return None


def resolve_packing(cfg: RunConfig, kind: str | None) -> tuple[RunConfig, dict]:
    """``cfg`` with ``train.packing`` a boolean (``auto`` decided by ``packing_off``), and what run_meta.json records
    of the choice: ``{"configured", "used"[, "why_off"]}``."""
    configured = cfg.train.packing
    if configured != "auto":
        return cfg, {"configured": configured, "used": bool(configured)}
    why = packing_off(cfg, kind)
    cfg = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, packing=why is None))
    return cfg, {"configured": "auto", "used": why is None, **({"why_off": why} if why else {})}


def packing_line(choice: dict) -> str | None:
    """The log line of an ``auto`` packing choice (None for an explicit setting: the user chose it)."""
    if choice["configured"] != "auto":
        return None
    if choice["used"]:
        return "train.packing auto: on (padding-free batches, each micro-batch's examples in one row)"
    return f"train.packing auto: off ({choice['why_off']})"


def check(cfg: RunConfig, kind: str) -> None:
    """Raise the ``refusal`` of ``cfg`` on a ``kind`` model as a ConfigError."""
    reason = refusal(cfg, kind)
    if reason:
        raise ConfigError(reason)


def _config_of(model_cfg):
    """The transformers config ``model_cfg`` names, or None when it cannot be read: the loader then reports the
    precise problem (no such file, not a model directory, hub unreachable) and the family is checked after loading."""
    from .errors import ModelLoadError
    from .models import load_model_config

    try:
        return load_model_config(model_cfg.name_or_path, model_cfg.trust_remote_code)
    except ModelLoadError:
        return None


def planned(cfg: RunConfig, head: str):
    """(family, transformers config) of the model ``cfg.model`` names, loaded with ``head``, from its config file
    alone; (None, None) when the config cannot be read."""
    from .models import config_kind

    config = _config_of(cfg.model)
    return (None, None) if config is None else (config_kind(config, head), config)


def planned_kind(cfg: RunConfig, head: str) -> str | None:
    """The family alone (``planned``)."""
    return planned(cfg, head)[0]


_CONTEXT_KEYS = ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length")


def check_sizes(cfg: RunConfig, config) -> None:
    """Values that pass their own bounds but not this model: a sequence (soft prompt included) longer than the
    model's learned positions, and what the method checks itself (``Method.fits_model``: DePT's rank)."""
    method = method_named(cfg.adapter.type)
    prompt = cfg.adapter.num_virtual_tokens if method.feeds_embeddings else 0
    key = next((k for k in _CONTEXT_KEYS if isinstance(getattr(config, k, None), int)), None)
    # encoder-decoders with relative positions (T5) have no fixed context; BART-like ones declare theirs
    if key is not None and cfg.data.max_length + prompt > getattr(config, key):
        extra = f" + {prompt} virtual tokens" if prompt else ""
        raise ConfigError(f"data.max_length: {cfg.data.max_length}{extra} exceeds the model's {getattr(config, key)} "
                          f"positions ({key} in its config)")
    if method.fits_model is not None:
        method.fits_model(cfg, config)


def check_model_family(model_cfg, spec: str, families=DECODING,
                       what: str = "generation and output-token losses") -> None:
    """Refuse, from its config alone, a model outside ``families`` for a command that needs them: ``generate``,
    ``loss-eval`` and ``generate-set`` need a decoder (an encoder does not generate text); the StepGame harness and
    the local judge, whose scorers concatenate context and answer, need a decoder-only model."""
    from .models import config_kind

    config = _config_of(model_cfg)
    if config is None:
        return
    kind = config_kind(config, model_cfg.head)
    if kind not in families:
        name = (getattr(config, "architectures", None) or [config.model_type])[0]
        hint = " (score an encoder's task runs with posttrain tasks eval)" if kind == "encoder" else ""
        raise ConfigError(f"{spec}: {name} is an {NAMES[kind]} model; {what} need "
                          f"{' or '.join(NAMES[k] for k in families)} models{hint}")
