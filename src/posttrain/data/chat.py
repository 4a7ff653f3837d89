"""Render conversations to token ids while tracking which tokens are template, instruction or output.

The conversation is rendered to text by a chat template (the tokenizer's own, or a named one below), then the
*whole* text is tokenised once, exactly as the model will see it at inference, with character offsets. Every
message's content is located in the rendered text; a token's segment is the segment owning most of its
characters:

- ``OUTPUT``: assistant content plus the end-of-turn text that closes it (up to and including the tokenizer's
  EOS token, e.g. ``<|im_end|>`` or ``</s>``): the model must learn to stop;
- ``INSTRUCTION``: system and user content;
- ``TEMPLATE``: everything else (BOS, role tags such as ``<|user|>\\n``, separators, a default system prompt the
  template injects).

Plain ``{"text": ...}`` rows are not chat-formatted: the text plus EOS is all OUTPUT.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import DataError

TEMPLATE, INSTRUCTION, OUTPUT = 0, 1, 2
SEGMENT_NAMES = {TEMPLATE: "template", INSTRUCTION: "instruction", OUTPUT: "output"}

# Named templates, for base models without one and to reproduce papers' formats exactly.
NAMED_TEMPLATES = {
    # Tulu / open-instruct, as used by the IM paper: "<|user|>\n{u}\n<|assistant|>\n{a}</s>\n", stripped at the end.
    "tulu": (
        "{{ bos_token }}{% for m in messages %}"
        "{% if m['role'] == 'system' %}{{ '<|system|>\n' + m['content'] + '\n' }}"
        "{% elif m['role'] == 'user' %}{{ '<|user|>\n' + m['content'] + '\n' }}"
        "{% else %}{{ '<|assistant|>\n' + m['content'] + eos_token }}{% if not loop.last %}{{ '\n' }}{% endif %}"
        "{% endif %}{% endfor %}"
        "{% if add_generation_prompt %}{{ '<|assistant|>\n' }}{% endif %}"
    ),
    # ChatML without SmolLM2's injected default system prompt.
    "chatml": (
        "{% for m in messages %}{{ '<|im_start|>' + m['role'] + '\n' + m['content'] + '<|im_end|>\n' }}{% endfor %}"
        "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
    ),
    # No markup: turns separated by newlines, EOS after each answer (prompt/completion data on base models).
    "plain": (
        "{% for m in messages %}{{ m['content'] }}{% if m['role'] == 'assistant' %}{{ eos_token }}{% endif %}"
        "{% if not loop.last %}{{ '\n' }}{% endif %}{% endfor %}"
    ),
}


@dataclass
class Rendered:
    input_ids: list[int]
    segments: list[int]  # TEMPLATE / INSTRUCTION / OUTPUT per token
    text: str
    offsets: list[tuple[int, int]] | None = None  # character span of each token in ``text`` (None: special)

    def pieces(self) -> list[str]:
        """Per-token strings whose concatenation is ``text`` (gaps go to the preceding token)."""
        if self.offsets is None:
            raise ValueError("no offsets recorded")
        starts = [start for start, _ in self.offsets] + [len(self.text)]
        out, cursor = [], 0
        for i, (start, end) in enumerate(self.offsets):
            stop = max(end, min(starts[i + 1], len(self.text))) if i + 1 < len(self.offsets) else len(self.text)
            stop = max(stop, cursor)
            out.append(self.text[cursor:stop])
            cursor = stop
        return out


def resolve_template(tokenizer, name: str, kind: str = "causal") -> str | None:
    """Jinja source for ``data.chat_template``; None means the tokenizer's own.

    An encoder-decoder whose tokenizer has no chat template (T5, Flan-T5, BART) reads its prompt as plain text,
    the way those models were instruction-tuned: ``tokenizer`` then means ``plain``."""
    if name == "tokenizer":
        if not getattr(tokenizer, "chat_template", None) and kind == "seq2seq":
            return NAMED_TEMPLATES["plain"]
        if not getattr(tokenizer, "chat_template", None):
            raise DataError(
                "data.chat_template: the tokenizer has no chat template; choose one of "
                + ", ".join(sorted(NAMED_TEMPLATES))
            )
        return None
    if name in NAMED_TEMPLATES:
        return NAMED_TEMPLATES[name]
    if "{%" in name or "{{" in name:  # an inline Jinja template
        return name
    raise DataError(
        f"data.chat_template: unknown template {name!r}; expected 'tokenizer', "
        + ", ".join(sorted(NAMED_TEMPLATES))
        + " or Jinja source"
    )


def _apply(tokenizer, messages: list[dict], template: str | None, **kwargs) -> str:
    """``apply_chat_template`` to text; a template that rejects the conversation raises DataError."""
    from jinja2 import TemplateError

    try:
        return tokenizer.apply_chat_template(messages, chat_template=template, tokenize=False, **kwargs)
    except TemplateError as err:  # e.g. raise_exception('Conversation roles must alternate user/assistant/...')
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise DataError(f"chat template rejected the conversation ({reason}); fix the roles or choose another "
                        "data.chat_template") from None


_SENTINEL = "\ue000{}\ue001"  # private-use characters: no template markup contains them


def _markup_before(tokenizer, messages: list[dict], template: str | None) -> list[int] | None:
    """Characters of template markup before each message's content, from a render with sentinel contents.

    Knowing where the markup ends keeps a content that also occurs in the markup (a user message "user", an
    answer "a" inside an injected system prompt) from being located in the markup. None when the template does
    not show every content once and in order (it drops or merges messages): then contents are searched for.
    """
    sentinels = [_SENTINEL.format(i) for i in range(len(messages))]
    try:
        text = _apply(tokenizer, [{**m, "content": s} for m, s in zip(messages, sentinels)], template)
    except DataError:
        return None
    gaps, pos = [], 0
    for sentinel in sentinels:
        start = text.find(sentinel, pos)
        if start < 0 or text.count(sentinel) != 1:
            return None
        gaps.append(start - pos)
        pos = start + len(sentinel)
    return gaps


def _locate(text: str, messages: list[dict], markup: list[int] | None = None) -> list[tuple[int, int, int]]:
    """(start, end, segment) character spans of each message's content, in order.

    ``markup[i]`` is the length of the template text between message i-1's content and message i's (see
    ``_markup_before``): content i is expected right there, verbatim or stripped by the template; otherwise (or
    without ``markup``) it is searched for from there.
    """
    spans, pos = [], 0
    for i, message in enumerate(messages):
        content = message["content"]
        expected = pos + markup[i] if markup is not None else pos
        if not content.strip():
            if markup is not None:
                pos = expected + (len(content) if text.startswith(content, expected) else 0)
            continue
        stripped = content.strip()
        if markup is not None and text.startswith(content, expected):
            start = expected
        elif markup is not None and text.startswith(stripped, expected):
            start, content = expected, stripped
        else:
            start = text.find(content, expected)
            if start < 0:  # templates may strip content
                content = stripped
                start = text.find(content, expected)
        if start < 0:
            raise DataError(
                f"chat template altered message {i} ({message['role']}); cannot align its tokens "
                "(choose another data.chat_template)"
            )
        segment = OUTPUT if message["role"] == "assistant" else INSTRUCTION
        spans.append((start, start + len(content), segment))
        pos = start + len(content)
    return spans


def _extend_end_of_turn(text: str, spans: list, end_of_turn: str | None) -> list:
    """Assistant spans absorb the end-of-turn marker that follows them (before the next message)."""
    if not end_of_turn:
        return spans
    out = []
    for k, (start, end, segment) in enumerate(spans):
        if segment == OUTPUT:
            limit = spans[k + 1][0] if k + 1 < len(spans) else len(text)
            hit = text.find(end_of_turn, end, limit)
            if hit >= 0:
                end = hit + len(end_of_turn)
        out.append((start, end, segment))
    return out


def _segments_from_offsets(offsets, spans, n_chars: int) -> list[int]:
    owner = [TEMPLATE] * n_chars
    for start, end, segment in spans:
        owner[start:end] = [segment] * (end - start)
    segments = []
    for start, end in offsets:
        if end <= start:
            segments.append(TEMPLATE)
            continue
        counts = [0, 0, 0]
        for c in range(start, end):
            counts[owner[c]] += 1
        # majority owner; ties go to content (a token "\nThe" belongs to the message it starts)
        best = max((counts[OUTPUT], 2), (counts[INSTRUCTION], 1), (counts[TEMPLATE], 0))
        segments.append(best[1])
    return segments


def render_messages(tokenizer, messages: list[dict], template: str | None) -> Rendered:
    text = _apply(tokenizer, messages, template)
    spans = _locate(text, messages, _markup_before(tokenizer, messages, template))
    spans = _extend_end_of_turn(text, spans, tokenizer.eos_token)
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    offsets = [tuple(o) for o in enc["offset_mapping"]]
    return Rendered(list(enc["input_ids"]), _segments_from_offsets(offsets, spans, len(text)), text, offsets)


def render_text(tokenizer, text: str) -> Rendered:
    """Plain LM text: BOS (if the tokenizer uses one) + text + EOS; all content is OUTPUT."""
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    ids = list(enc["input_ids"])
    prefix = [tokenizer.bos_token_id] if _adds_bos(tokenizer) else []
    suffix = [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []
    shown = (tokenizer.bos_token or "") * len(prefix) + text + (tokenizer.eos_token or "") * len(suffix)
    shift = len(shown) - len(text) - len(tokenizer.eos_token or "") * len(suffix)
    offsets = [(0, shift)] * len(prefix) + [(a + shift, b + shift) for a, b in enc["offset_mapping"]]
    offsets += [(shift + len(text), len(shown))] * len(suffix)
    segments = [TEMPLATE] * len(prefix) + [OUTPUT] * (len(ids) + len(suffix))
    return Rendered(prefix + ids + suffix, segments, shown, offsets)


def _adds_bos(tokenizer) -> bool:
    if tokenizer.bos_token_id is None:
        return False
    probe = tokenizer("a", add_special_tokens=True)["input_ids"]
    return bool(probe) and probe[0] == tokenizer.bos_token_id


def render_example(tokenizer, example: dict, template: str | None) -> Rendered:
    if "text" in example:
        return render_text(tokenizer, example["text"])
    return render_messages(tokenizer, example["messages"], template)


def generation_prompt(tokenizer, messages: list[dict], template: str | None) -> str:
    """Chat-formatted prompt text ending with the assistant header, for generation."""
    return _apply(tokenizer, messages, template, add_generation_prompt=True)
