"""Classification tasks as causal-LM examples: a context and one label word to predict after it.

Two forms of a task (declared in ``posttrain.tasks``):

- ``text_to_text`` — the T5-style input of DePT (Shi & Lipani, ICLR 2024; "sentence: <x>") followed by the label
  word: context = the input, continuation = " " + word;
- ``template`` — the LM-BFF / PCP hard prompt (Gao et al. 2021; Shi & Lipani, NeurIPS 2023) with the label slot.
  For a decoder the label word is predicted at the slot from its *left* context only: context = the template up
  to the slot, continuation = " " + word; text after the slot (e.g. " ." in "<x> It was <mask> .") is not used,
  since a causal model cannot condition on it at the slot. This is the principled default for causal LMs.

Training puts the loss on the label word's tokens (``label_tokens: all``) or on its first sub-token only
(``first``, as LM-BFF's single-token verbalizers); evaluation ranks every label word by the same quantity
(summed log-probability of the scored tokens) with ``scoring.scorer.choose``. Over-long contexts lose their
middle: the first 32 tokens (e.g. "question: ..." of BoolQ's text-to-text form) and the last tokens (next to the
label slot) are kept. Summed log-probabilities favour short label words; the built-in verbalizers are single
words, and ``label_tokens: first`` removes the length effect entirely.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..errors import ConfigError, DataError
from ..tasks import canonical_label, label_words, render_template, render_text_to_text

HEAD_TOKENS = 32  # tokens kept from the start of an over-long context
SLOT = "\u2063MASK\u2063"  # an invisible sentinel no real text contains, split on after rendering


def context_and_words(task, example: dict, form: str) -> tuple[str, list[str]]:
    """(context text, label words in label order) for one example in the given form."""
    if task.is_regression:
        raise ConfigError(f"task.name: {task.name} is a regression task; classification training covers "
                          "classification tasks only")
    words = label_words(task)
    if form == "text_to_text":
        return render_text_to_text(task, example)[0], words
    text = render_template(task, example, SLOT)
    before = text.split(SLOT, 1)[0]
    return before.rstrip(), words


def label_word_ids(tokenizer, word: str) -> list[int]:
    """Token ids of a label word as it follows the context (" " + word); an added token (a soft, DART-lite label
    token) is itself."""
    if word in tokenizer.get_added_vocab():
        return [tokenizer.convert_tokens_to_ids(word)]
    ids = tokenizer(" " + word, add_special_tokens=False)["input_ids"]
    if not ids:
        raise ConfigError(f"label word {word!r} tokenises to nothing")
    return ids


def cut_middle(ids: list[int], room: int) -> list[int]:
    """Keep ``room`` tokens: the start (task prefix, a question; at most HEAD_TOKENS) and the end (next to the slot)."""
    head = min(HEAD_TOKENS, room // 4)
    return ids[:head] + ids[len(ids) - (room - head):]


def encode_choices(tokenizer, context: str, words: list[str], max_length: int, label_tokens: str,
                   kind: str = "causal"):
    """Token ids of the context (left-truncated so context + longest scored word fit) and of each word.

    Encoder-decoders (``kind="seq2seq"``): the context is the encoder's input and has ``max_length`` to itself;
    each word is a decoder target that ends with EOS (DePT's T5 targets), unless only its first token is scored."""
    ctx = tokenizer(context, add_special_tokens=True)["input_ids"]
    options = []
    for word in words:
        ids = label_word_ids(tokenizer, word)
        if kind == "seq2seq" and label_tokens != "first" and tokenizer.eos_token_id is not None:
            ids = ids + [tokenizer.eos_token_id]
        options.append(ids[:1] if label_tokens == "first" else ids)
    room = max_length - (0 if kind == "seq2seq" else max(len(o) for o in options))
    if room < 1:
        raise ConfigError(f"data.max_length={max_length} leaves no room for the context before the label words")
    truncated = len(ctx) > room
    if truncated:
        ctx = cut_middle(ctx, room)
    return ctx, options, truncated


@dataclass
class ClassificationStats:
    examples: int = 0
    tokens: int = 0
    truncated: int = 0
    by_label: dict = field(default_factory=dict)


def build_classification_dataset(tokenizer, task, examples: list[dict], form: str, max_length: int,
                                 label_tokens: str, source: str, kind: str = "causal"):
    """Rows with input_ids / labels / loss_weights (weight 1 on the gold word's scored tokens) + stats.

    Decoder-only rows are one sequence (context + word); encoder-decoder rows (``data.seq2seq``) hold the context as
    ``input_ids`` and the word as the decoder's ``labels``."""
    import datasets

    stats = ClassificationStats()
    rows = []
    for example in examples:
        if example.get("label") is None:
            raise DataError(f"{source}: example {example.get('idx')} has no label")
        context, words = context_and_words(task, example, form)
        ctx, options, truncated = encode_choices(tokenizer, context, words, max_length, label_tokens, kind)
        gold = task.labels.index(canonical_label(example["label"]))
        target = options[gold]
        if kind == "seq2seq":
            ids = ctx
            rows.append({"input_ids": ctx, "labels": target, "loss_weights": [1.0] * len(target)})
        else:
            ids = ctx + target
            rows.append({
                "input_ids": ids,
                "labels": [-100] * len(ctx) + target,
                "loss_weights": [0.0] * len(ctx) + [1.0] * len(target),
            })
        stats.examples += 1
        stats.tokens += len(ids)
        stats.truncated += int(truncated)
        stats.by_label[task.labels[gold]] = stats.by_label.get(task.labels[gold], 0) + 1
    if not rows:
        raise DataError(f"{source}: no examples")
    return datasets.Dataset.from_list(rows), stats
