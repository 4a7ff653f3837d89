"""Train and held-out loss on output tokens: the IM paper's overfitting analysis (Shi et al., NeurIPS 2024,
Sec. 5.5, Fig. 3 / App. D).

Whatever loss a model was trained with (IT, IM, NEFTune, KL), it is measured the same way: the next-token NLL of
the *output* (assistant) tokens only, instruction and template tokens masked (IT masking, as the reference's
``compute_loss.py``). Two reductions are reported, for a file of examples i with output tokens t:

    token_mean   = sum_i sum_t nll_it / sum_i n_i          (every output token weighs the same)
    example_mean = mean_i ( sum_t nll_it / n_i )           (every example weighs the same; the reference code)

The paper's finding: IM ends with a *higher* train loss and a *lower* test loss than IT (less overfitting);
``gap = test - train`` summarises it.
"""

from __future__ import annotations

from pathlib import Path

import torch

from .. import support
from ..errors import ConfigError
from ..run_data import OUTPUT_ONLY
from ..data.chat import resolve_template
from ..data.instruction import load_examples
from ..data.seq2seq import Seq2SeqCollator, build_seq2seq_dataset, decoder_start_id
from ..data.sft import SFTCollator, build_sft_dataset
from ..engine import per_example_nll
from ..generation import load_for_inference
from ..models.families import model_kind


@torch.no_grad()
def output_loss(model, tokenizer, examples: list[dict], template, *, max_length: int = 1024, batch_size: int = 4,
                source: str = "", progress: bool = True) -> dict:
    """Output-token NLL of ``examples`` under ``model``: token_mean, example_mean, examples, tokens."""
    from tqdm.auto import tqdm

    if model_kind(model) == "seq2seq":  # the instruction on the encoder, the output on the decoder
        dataset, stats = build_seq2seq_dataset(tokenizer, examples, template, OUTPUT_ONLY, max_length, source=source)
        collate = Seq2SeqCollator(tokenizer.pad_token_id, decoder_start_id(model.config))
    else:
        dataset, stats = build_sft_dataset(tokenizer, examples, template, OUTPUT_ONLY, max_length, source=source)
        collate = SFTCollator(tokenizer.pad_token_id)
    model.eval()
    device = next(model.parameters()).device
    sums, counts = [], []
    for start in tqdm(range(0, len(dataset), batch_size), desc=f"loss {Path(source).name or 'data'}", unit="batch",
                      disable=not progress, leave=False):
        batch = collate([dataset[i] for i in range(start, min(start + batch_size, len(dataset)))])
        batch = {k: v.to(device) for k, v in batch.items() if k != "loss_normalizer"}
        s, c = per_example_nll(model, batch)
        sums.append(s.cpu())
        counts.append(c.cpu())
    sums, counts = torch.cat(sums), torch.cat(counts)
    return {
        "token_mean": float(sums.sum() / counts.sum()),
        "example_mean": float((sums / counts).mean()),
        "examples": int(len(sums)),
        "tokens": int(counts.sum()),
        "truncated": stats.truncated,
    }


def loss_eval(model_spec: str, files: dict[str, str], *, limit: int | None = None, max_length: int = 1024,
              batch_size: int = 4, chat_template: str | None = None, data_format: str = "auto",
              progress: bool = True) -> dict:
    """``{name: output_loss(...)}`` for each named data file (e.g. train, test), plus ``gap = test - train``."""
    if not files:
        raise ConfigError("loss-eval: give at least one of --train FILE / --test FILE")
    loaded = {}
    for name, path in files.items():  # read and validate every file before loading the model
        rows = load_examples(path, data_format)
        loaded[name] = (path, rows[:limit] if limit else rows)
    model, tokenizer, template_name = load_for_inference(model_spec, families=support.DECODING)
    template = resolve_template(tokenizer, chat_template or template_name, model_kind(model))
    results = {name: output_loss(model, tokenizer, rows, template, max_length=max_length, batch_size=batch_size,
                                 source=path, progress=progress)
               for name, (path, rows) in loaded.items()}
    metrics = {f"{name}_output_loss": r["token_mean"] for name, r in results.items()}
    metrics.update({f"{name}_output_loss_example_mean": r["example_mean"] for name, r in results.items()})
    if "train" in results and "test" in results:
        metrics["gap"] = results["test"]["token_mean"] - results["train"]["token_mean"]
    return {"metrics": metrics, "files": {name: path for name, (path, _) in loaded.items()}, "details": results}
