"""Prompt tuning and DePT (decomposed prompt tuning) as one module.

Prompt tuning (Lester et al. 2021, arXiv:2104.08691) learns m virtual token embeddings P in R^{m x d} that are
prepended to the frozen model's input embeddings. DePT (Shi & Lipani, ICLR 2024, arXiv:2309.05173) shortens
the prompt and adds a low-rank, *position-wise* update of the frozen input embeddings E in R^{s x d}:

    E' = E + (alpha / sqrt(r)) * A B,    A in R^{s x r} (Kaiming-uniform),  B in R^{r x d} (zeros),
    input = [P ; E'],                     trainable: P, A, B  (m*d + s*r + r*d parameters).

Row i of A B is added to the token at position i. With B = 0 at step 0, DePT(m, r) is exactly prompt tuning with
m tokens; vanilla prompt tuning is the r = 0 case of the same code path.

The two methods are ``methods/prompt_tuning.py`` and ``methods/dept.py``; this module is the wrapper they share.

Choices (named in ``AdapterConfig`` and recorded in run metadata):

- ``offset_positions: real_tokens`` (default) indexes A B by each token's rank among the example's real tokens
  (from the attention mask), so an example gets the same offsets whether it is padded left, right or not at all,
  and inputs need not be padded to s (dynamic padding; shorter batches cost less).
  ``absolute`` indexes by the padded position, as the reference code does with inputs padded to exactly s
  (left-padded for decoders, so the real tokens take the *last* rows); use it with ``data.pad_to_max_length``
  to reproduce the reference. For right-padded inputs both choices give the same loss and gradients.
- Decoder-only models: virtual tokens come first, then the (possibly left-padded) input; position ids are
  counted over the non-padding tokens, so a batch equals its examples run one by one.
  In ``generate`` the offset applies to the prompt tokens only (generated tokens get none), as in the reference.
- Seq2seq models: prompt and offset go on the encoder side; the decoder is untouched.
- Encoder models (MLM verbalizers, classification heads): prompt and offset are both applied. (The reference's
  PEFT fork silently drops A and B for ``SequenceClassification``; we do not.)
- Classification heads: every module the head creates afresh (``classification_head_names``: the classifier or
  score, and a pooler or pre_classifier beside it) trains with the prompt and is saved with it, so a reload does not
  draw them at random again. A decoder-only classifier (Llama, GPT-2) scores the last position, and transformers
  cannot find padding in ``inputs_embeds``, so each row's padding is moved to the left first: a right-padded example
  is scored at its last real token, exactly as when it is alone.

The wrapper strips the virtual positions from its outputs: logits (and ``logits_to_keep`` masks) refer to the
real tokens only, so every scorer sees the same shapes as for the bare model, and the LM head never runs at a
virtual position.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from ..errors import ConfigError, ModelLoadError
from ..models import load_model_and_tokenizer
from ..models.families import classification_head_names, is_sequence_classifier, model_kind
from . import soft_prompt_io

REFERENCE_INIT_TEXT = "Classify this text is postive or not:"  # (sic) the DePT reference code's TEXT init


class SoftPromptModel(nn.Module):
    """A frozen transformers model with a trainable soft prompt P and (r > 0) a DePT offset A B."""

    supports_prefix_cache = False  # the scorer must not reuse a KV cache across our virtual tokens

    def __init__(self, base: nn.Module, num_virtual_tokens: int, rank: int = 0, max_length: int = 0,
                 alpha: float = 8.0, offset_positions: str = "real_tokens"):
        super().__init__()
        if num_virtual_tokens < 0 or rank < 0:
            raise ConfigError("adapter: num_virtual_tokens and dept_rank must be >= 0")
        if rank > 0 and max_length < 1:
            raise ConfigError("adapter.dept_max_length: DePT needs the offset length s >= 1")
        if offset_positions not in ("real_tokens", "absolute"):
            raise ConfigError(f"adapter.offset_positions: expected real_tokens or absolute, got {offset_positions!r}")
        self.base = base
        for p in base.parameters():
            p.requires_grad_(False)
        # A freshly initialised classification head has to train with the prompt (PEFT's modules_to_save; the
        # reference puts it in the prompt's parameter group, which we follow).
        self.head_names = classification_head_names(base)  # dotted module names, e.g. "bert.pooler"
        for name in self.head_names:
            base.get_submodule(name).requires_grad_(True)
        emb = base.get_input_embeddings()
        d = emb.embedding_dim
        self.kind = model_kind(base)
        # a decoder-only classifier reads the last position: padding goes in front (see ``embed``)
        self.left_align = self.kind == "causal" and is_sequence_classifier(base)
        self.num_virtual_tokens, self.rank, self.max_length = num_virtual_tokens, rank, max_length
        self.alpha, self.offset_positions = float(alpha), offset_positions
        dtype, device = emb.weight.dtype, emb.weight.device
        self.prompt = nn.Parameter(torch.empty(num_virtual_tokens, d, dtype=dtype, device=device).uniform_(-0.5, 0.5))
        self.offset_a = nn.Parameter(torch.empty(max_length if rank else 0, rank, dtype=dtype, device=device))
        self.offset_b = nn.Parameter(torch.zeros(rank, d, dtype=dtype, device=device))
        if rank:
            nn.init.kaiming_uniform_(self.offset_a, a=math.sqrt(5))

    # --- initialisation of P (Lester et al.: random, sampled vocabulary, or text) -------------------------------
    @torch.no_grad()
    def init_prompt(self, how: str, tokenizer=None, text: str | None = None, seed: int = 0) -> None:
        m = self.num_virtual_tokens
        table = self.base.get_input_embeddings().weight
        if how == "random":
            gen = torch.Generator().manual_seed(seed)
            self.prompt.copy_(torch.rand(m, table.shape[1], generator=gen).sub_(0.5).to(table))
        elif how == "vocab":
            gen = torch.Generator().manual_seed(seed)
            self.prompt.copy_(table[torch.randint(0, min(5000, table.shape[0]), (m,), generator=gen)])
        elif how == "text":
            if tokenizer is None or not text:
                raise ConfigError("adapter.prompt_init=text needs adapter.prompt_init_text and a tokenizer")
            ids = tokenizer(text)["input_ids"]
            if not ids:
                raise ConfigError(f"adapter.prompt_init_text: {text!r} tokenises to nothing")
            ids = (ids * (m // len(ids) + 1))[:m]  # repeat or truncate to m tokens, as PEFT's TEXT init
            self.prompt.copy_(table[torch.tensor(ids, dtype=torch.long)])
        else:
            raise ConfigError(f"adapter.prompt_init: expected random, vocab or text, got {how!r}")

    # --- plumbing so the Trainer, PEFT helpers and our losses see the base model --------------------------------
    def get_base_model(self) -> nn.Module:
        return self.base

    def __getattr__(self, name):
        try:
            return super().__getattr__(name)
        except AttributeError:
            if name == "base":
                raise
            return getattr(self.base, name)

    @property
    def real_token_offset(self) -> int:
        """Virtual positions in front of the real tokens in the base model's hidden states (seq2seq prompts sit
        on the encoder side, so decoder positions are not shifted). Scorers read it (``verbalizer_head``)."""
        return 0 if self.kind == "seq2seq" else self.num_virtual_tokens

    def posttrain_save(self, directory) -> None:
        """Checkpoints and final weights hold only P, A, B (+ config), not the frozen base model."""
        soft_prompt_io.save_soft_prompt(self, directory)

    def posttrain_load(self, directory) -> None:
        soft_prompt_io.load_weights(self, directory)

    def save_pretrained(self, directory) -> None:
        """The adapter alone (P, A, B, any new head, and its config); ``from_pretrained(base, directory)`` reloads
        it onto a fresh copy of the base model."""
        soft_prompt_io.save_soft_prompt(self, directory)

    @classmethod
    def from_pretrained(cls, base: nn.Module, directory) -> "SoftPromptModel":
        """Wrap a fresh ``base`` model with the adapter saved in ``directory`` (``posttrain_save``), in eval mode."""
        cfg = soft_prompt_io.read_config(directory)
        width = base.get_input_embeddings().embedding_dim
        if cfg["hidden_size"] != width:
            raise ModelLoadError(
                f"{soft_prompt_io.config_path(directory)}: adapter was trained for hidden size {cfg['hidden_size']}, "
                f"the base model has {width}"
            )
        model = cls(base, cfg["num_virtual_tokens"], rank=cfg["dept_rank"], max_length=cfg["dept_max_length"],
                    alpha=cfg["dept_alpha"], offset_positions=cfg["offset_positions"])
        soft_prompt_io.load_weights(model, directory)
        return model.eval()

    def trainable_parameters(self) -> dict[str, nn.Parameter]:
        named = {"prompt": self.prompt}
        if self.rank:
            named.update(offset_a=self.offset_a, offset_b=self.offset_b)
        for head in self.head_names:
            named.update({f"head.{head}.{n}": p for n, p in self.base.get_submodule(head).named_parameters()})
        return named

    def optimizer_groups(self, prompt_lr: float, offset_lr: float, weight_decay: float = 0.0) -> list[dict]:
        """DePT's two learning rates: P at ``prompt_lr``; A and B at ``offset_lr``."""
        heads = [p for n, p in self.trainable_parameters().items() if n.startswith("head.")]
        groups = [{"params": [self.prompt, *heads], "lr": prompt_lr, "weight_decay": weight_decay, "name": "prompt"}]
        if self.rank:
            groups.append({"params": [self.offset_a, self.offset_b], "lr": offset_lr,
                           "weight_decay": weight_decay, "name": "offset"})
        return groups

    # --- the forward pass ------------------------------------------------------------------------------------
    def offset(self, attention_mask: torch.Tensor, length: int) -> torch.Tensor | None:
        """(B, T, d) offset rows for the batch: (alpha / sqrt r) * (A B)[index of each token]."""
        if not self.rank:
            return None
        if self.offset_positions == "absolute":
            if length > self.max_length:
                raise ValueError(f"input length {length} exceeds the DePT offset length s={self.max_length}")
            rows = self.offset_a[:length] @ self.offset_b  # (T, d): the reference's fixed-position offset
            return (self.alpha / math.sqrt(self.rank)) * rows[None]
        index = attention_mask.long().cumsum(-1) - 1
        if int(index.max()) >= self.max_length:
            raise ValueError(f"an input has more than s={self.max_length} real tokens (the DePT offset length)")
        rows = self.offset_a[index.clamp(min=0)] @ self.offset_b  # (B, T, d); padding rows are zeroed below
        return (self.alpha / math.sqrt(self.rank)) * rows * attention_mask[..., None].to(rows.dtype)

    def embed(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None):
        """Input embeddings with the prompt prepended and the offset added; returns (embeds, mask, position_ids)."""
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        embeds = self.base.get_input_embeddings()(input_ids)
        offset = self.offset(attention_mask, input_ids.shape[1])
        if offset is not None:
            embeds = embeds + offset.to(embeds.dtype)
        batch, m = input_ids.shape[0], self.num_virtual_tokens
        prompt = self.prompt[None].expand(batch, -1, -1).to(embeds.dtype)
        embeds = torch.cat([prompt, embeds], dim=1)
        mask = torch.cat([attention_mask.new_ones(batch, m), attention_mask], dim=1)
        if self.left_align:
            # stable sort on the mask: all padding in front (also of the prompt: padding between prompt and text
            # changes Falcon's scores), then prompt and text in their order, the last real token last
            order = torch.sort(mask.long(), dim=1, stable=True).indices
            embeds = embeds.gather(1, order[..., None].expand_as(embeds))
            mask = mask.gather(1, order)
        position_ids = None
        if self.kind == "causal":  # counted over non-padding tokens: left padding does not shift positions
            position_ids = (mask.long().cumsum(-1) - 1).clamp(min=0)
        return embeds, mask, position_ids

    def forward(self, input_ids=None, attention_mask=None, labels=None, logits_to_keep=None, position_ids=None,
                **kwargs):
        if position_ids is not None and attention_mask is None:
            raise ValueError("soft prompts do not support explicit position_ids (packing); use padded batches")
        # (with a mask, positions are counted over the real tokens after the prompt here, as a padded batch's are)
        embeds, mask, positions = self.embed(input_ids, attention_mask)
        m = self.num_virtual_tokens
        if self.kind == "seq2seq":
            return self.base(inputs_embeds=embeds, attention_mask=mask, labels=labels, **kwargs)
        call = dict(inputs_embeds=embeds, attention_mask=mask, **kwargs)
        if positions is not None:
            call["position_ids"] = positions
        if labels is not None and labels.dim() == 2 and labels.shape[1] == input_ids.shape[1]:  # token labels
            call["labels"] = torch.cat([labels.new_full((labels.shape[0], m), -100), labels], dim=1)
        elif labels is not None:  # sequence-level labels (classification heads)
            call["labels"] = labels
        if isinstance(logits_to_keep, torch.Tensor) and logits_to_keep.dtype == torch.bool:
            call["logits_to_keep"] = torch.cat([logits_to_keep.new_zeros(logits_to_keep.shape[0], m), logits_to_keep], 1)
        elif logits_to_keep is not None:
            call["logits_to_keep"] = logits_to_keep  # an int counts from the end: always real tokens
        out = self.base(**call)
        logits = getattr(out, "logits", None)
        full_length = m + input_ids.shape[1]
        if logits is not None and logits.dim() == 3 and logits.shape[1] == full_length:
            out["logits"] = logits[:, m:]  # the virtual positions are never shown to scorers
        return out

    @torch.no_grad()
    def generate(self, input_ids=None, attention_mask=None, **kwargs):
        """Greedy/sampled generation; the prompt tokens carry P and the offset, generated tokens do not.

        Returns sequences that start with ``input_ids`` for decoder-only models (like transformers), and the
        decoder's sequences for seq2seq models.
        """
        embeds, mask, _ = self.embed(input_ids, attention_mask)
        out = self.base.generate(inputs_embeds=embeds, attention_mask=mask, **kwargs)
        if self.kind == "causal":
            out = torch.cat([input_ids, out.to(input_ids.device)], dim=1)
        return out


def load_soft_prompt(base: nn.Module, directory) -> SoftPromptModel:
    """Wrap a fresh ``base`` model with the adapter saved in ``directory``."""
    return SoftPromptModel.from_pretrained(base, directory)


def wrap(model, cfg, tokenizer, rank: int) -> SoftPromptModel:
    """Freeze ``model`` and prepend the soft prompt of ``cfg.adapter`` (with a rank-``rank`` offset for DePT)."""
    adapter = cfg.adapter
    wrapped = SoftPromptModel(
        model, adapter.num_virtual_tokens, rank=rank,
        max_length=(adapter.dept_max_length or cfg.data.max_length) if rank else 0,
        alpha=adapter.dept_alpha, offset_positions=adapter.offset_positions,
    )
    wrapped.init_prompt(adapter.prompt_init, tokenizer=tokenizer, text=adapter.prompt_init_text, seed=cfg.train.seed)
    return wrapped


def optimizer_groups(model: SoftPromptModel, cfg) -> list[dict]:
    return model.optimizer_groups(cfg.adapter.prompt_learning_rate, cfg.adapter.offset_learning_rate,
                                  cfg.train.weight_decay)


def restore(final_dir, model_cfg, for_training: bool, num_labels: int | None):
    """A finished prompt-tuning / DePT run: the run's base model wrapped with the saved P (and A, B)."""
    model, tokenizer = load_model_and_tokenizer(model_cfg, for_training=for_training, num_labels=num_labels)
    return load_soft_prompt(model, final_dir), tokenizer


def describe_prompt(cfg) -> dict:
    a = cfg.adapter
    return {"num_virtual_tokens": a.num_virtual_tokens, "prompt_init": a.prompt_init,
            "prompt_learning_rate": a.prompt_learning_rate, "padding_side": cfg.data.padding_side,
            "pad_to_max_length": cfg.data.pad_to_max_length}
