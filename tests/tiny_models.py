"""Tiny random models of every architecture family, with a tokenizer made offline, saved like a user's model dir.

``ARCHITECTURES`` maps a name to (family, config builder). ``save_tiny(name, path)`` writes config + safetensors +
tokenizer; the tokenizer gets the special tokens its family expects (decoder-only: none added around the text;
T5-like: "</s>" after it and the sentinel <extra_id_0>; BART and encoders: "<s> ... </s>", a <mask> token).
Used by the architecture-matrix tests (tests/test_model_matrix.py) and ``benchmarks/model_matrix.py``.
"""

from __future__ import annotations

from pathlib import Path

from conftest import CHATML, CORPUS

SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<s>", "</s>", "<pad>", "<mask>", "<extra_id_0>",
            "<|user|>", "<|assistant|>", "<|system|>"]


def make_family_tokenizer(family: str, wrap: str | None = None):
    """A byte-level BPE tokenizer (vocabulary ~400) for ``family`` (causal, seq2seq, encoder); ``wrap`` overrides
    how special tokens surround a text ("t5": text </s>; "bos_eos": <s> text </s>; None: the family's)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=SPECIALS,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(CORPUS, trainer)
    wrap = wrap or {"causal": None, "seq2seq": "t5", "encoder": "bos_eos"}[family]
    ids = {t: tok.token_to_id(t) for t in ("<s>", "</s>")}
    if wrap == "t5":
        tok.post_processor = processors.TemplateProcessing(single="$A </s>", pair="$A </s> $B </s>",
                                                           special_tokens=[("</s>", ids["</s>"])])
    elif wrap == "bos_eos":
        tok.post_processor = processors.TemplateProcessing(
            single="<s> $A </s>", pair="<s> $A </s> </s> $B </s>",
            special_tokens=[("<s>", ids["<s>"]), ("</s>", ids["</s>"])])
    if family == "causal":
        fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|im_end|>",
                                       unk_token="<|endoftext|>", bos_token="<|im_start|>")
        fast.chat_template = CHATML
    else:
        fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="</s>", pad_token="<pad>",
                                       unk_token="<|endoftext|>", bos_token="<s>", mask_token="<mask>",
                                       cls_token="<s>", sep_token="</s>",
                                       additional_special_tokens=["<extra_id_0>"] if wrap == "t5" else None)
    return fast


def _decoder(cls_name: str, **extra):
    def build(vocab: int, ids: dict):
        import transformers

        common = dict(vocab_size=vocab, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, max_position_embeddings=256, pad_token_id=ids["pad"],
                      bos_token_id=ids["bos"], eos_token_id=ids["eos"])
        common.update(extra)
        return getattr(transformers, cls_name)(**common)
    return build


def _gpt2(vocab, ids):
    from transformers import GPT2Config

    return GPT2Config(vocab_size=vocab, n_embd=32, n_layer=2, n_head=4, n_positions=256, bos_token_id=ids["bos"],
                      eos_token_id=ids["eos"], pad_token_id=ids["pad"])


def _t5_like(cls_name: str):
    def build(vocab, ids):
        import transformers

        return getattr(transformers, cls_name)(
            vocab_size=vocab, d_model=32, d_kv=8, d_ff=64, num_layers=2, num_decoder_layers=2, num_heads=4,
            pad_token_id=ids["pad"], eos_token_id=ids["eos"], decoder_start_token_id=ids["pad"])
    return build


def _bart_like(cls_name: str):
    def build(vocab, ids):
        import transformers

        return getattr(transformers, cls_name)(
            vocab_size=vocab, d_model=32, encoder_layers=2, decoder_layers=2, encoder_attention_heads=4,
            decoder_attention_heads=4, encoder_ffn_dim=64, decoder_ffn_dim=64, max_position_embeddings=256,
            pad_token_id=ids["pad"], bos_token_id=ids["bos"], eos_token_id=ids["eos"],
            decoder_start_token_id=ids["eos"], forced_eos_token_id=None)
    return build


def _encoder(cls_name: str, **extra):
    def build(vocab, ids):
        import transformers

        common = dict(vocab_size=vocab, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, max_position_embeddings=256 + 2, pad_token_id=ids["pad"],
                      bos_token_id=ids["bos"], eos_token_id=ids["eos"])
        common.update(extra)
        return getattr(transformers, cls_name)(**common)
    return build


def _opt(vocab, ids):
    from transformers import OPTConfig

    return OPTConfig(vocab_size=vocab, hidden_size=32, ffn_dim=64, num_hidden_layers=2, num_attention_heads=4,
                     word_embed_proj_dim=32, max_position_embeddings=256, pad_token_id=ids["pad"],
                     bos_token_id=ids["bos"], eos_token_id=ids["eos"])


def _bloom(vocab, ids):
    from transformers import BloomConfig

    return BloomConfig(vocab_size=vocab, hidden_size=32, n_layer=2, n_head=4, pad_token_id=ids["pad"],
                       bos_token_id=ids["bos"], eos_token_id=ids["eos"])


def _albert(vocab, ids):
    from transformers import AlbertConfig

    return AlbertConfig(vocab_size=vocab, embedding_size=16, hidden_size=32, intermediate_size=64,
                        num_hidden_layers=2, num_attention_heads=4, max_position_embeddings=256,
                        pad_token_id=ids["pad"], bos_token_id=ids["bos"], eos_token_id=ids["eos"])


def _distilbert(vocab, ids):
    from transformers import DistilBertConfig

    return DistilBertConfig(vocab_size=vocab, dim=32, hidden_dim=64, n_layers=2, n_heads=4, max_position_embeddings=256,
                            pad_token_id=ids["pad"])


ARCHITECTURES = {  # name -> (family, config builder(vocab_size, special ids))
    "llama": ("causal", _decoder("LlamaConfig", num_key_value_heads=2, tie_word_embeddings=True)),
    "qwen2": ("causal", _decoder("Qwen2Config", num_key_value_heads=2)),
    "mistral": ("causal", _decoder("MistralConfig", num_key_value_heads=2)),
    "gemma": ("causal", _decoder("GemmaConfig", num_key_value_heads=2, head_dim=8)),
    "gemma2": ("causal", _decoder("Gemma2Config", num_key_value_heads=2, head_dim=8, final_logit_softcapping=3.0)),
    "gpt2": ("causal", _gpt2),
    "phi3": ("causal", _decoder("Phi3Config", num_key_value_heads=2)),
    "gpt_neox": ("causal", _decoder("GPTNeoXConfig", tie_word_embeddings=False)),
    "qwen3": ("causal", _decoder("Qwen3Config", num_key_value_heads=2, head_dim=8)),
    "phi": ("causal", _decoder("PhiConfig")),
    "falcon": ("causal", _decoder("FalconConfig", new_decoder_architecture=False, multi_query=True)),
    "opt": ("causal", _opt),
    "bloom": ("causal", _bloom),
    "olmo": ("causal", _decoder("OlmoConfig", num_key_value_heads=2)),
    "t5": ("seq2seq", _t5_like("T5Config")),
    "bart": ("seq2seq", _bart_like("BartConfig")),
    "mt5": ("seq2seq", _t5_like("MT5Config")),
    "mbart": ("seq2seq", _bart_like("MBartConfig")),
    "bert": ("encoder", _encoder("BertConfig")),
    "roberta": ("encoder", _encoder("RobertaConfig")),
    "deberta_v2": ("encoder", _encoder("DebertaV2Config")),
    "xlm_roberta": ("encoder", _encoder("XLMRobertaConfig")),
    "electra": ("encoder", _encoder("ElectraConfig", embedding_size=32)),
    "albert": ("encoder", _albert),
    "distilbert": ("encoder", _distilbert),
}

MODEL_CLASS = {"causal": "AutoModelForCausalLM", "seq2seq": "AutoModelForSeq2SeqLM", "encoder": "AutoModelForMaskedLM"}

ONE_PER_FAMILY = {"causal": "llama", "seq2seq": "t5", "encoder": "roberta"}


def build_tiny(name: str, seed: int = 0):
    """(model, tokenizer) of architecture ``name``: random weights from ``seed``, eval mode."""
    import torch
    import transformers

    family, config_of = ARCHITECTURES[name]
    tok = make_family_tokenizer(family, wrap="bos_eos" if name in ("bart", "mbart") else None)
    ids = {"pad": tok.pad_token_id, "bos": tok.bos_token_id, "eos": tok.eos_token_id}
    config = config_of(len(tok), ids)
    torch.manual_seed(seed)
    model = getattr(transformers, MODEL_CLASS[family]).from_config(config)
    return model.eval(), tok


def save_tiny(name: str, path: str | Path, seed: int = 0) -> Path:
    """A model directory (config.json, model.safetensors, tokenizer files) of the tiny ``name``."""
    path = Path(path)
    model, tok = build_tiny(name, seed)
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return path
