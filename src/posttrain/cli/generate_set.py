"""``posttrain generate-set`` and ``posttrain bleu-train``: the generation side of the IM paper's evaluation.

    posttrain generate-set --model SPEC|RUN_DIR [--prompts FILE] [--limit N] --out OUT.json [...]
    posttrain bleu-train --outputs OUT.json --references TRAIN_FILE [--summary PATH]

``generate-set`` writes AlpacaEval model outputs (the input of AlpacaEval 1.0/2.0 in Shi et al., NeurIPS 2024) and
resumes after a kill (``generate_set.py``); ``bleu-train`` is the paper's Table 2 memorisation score
(``memorisation.py``). Wire into the main parser with ``register(subparsers)``; handlers raise ``PosttrainError``
subclasses, which the main CLI prints as one ``error:`` line.
"""

from __future__ import annotations


def _cmd_generate_set(args) -> int:
    from .. import support
    from ..generation import load_for_inference
    from ..io_utils import refuse_finished
    from ..evaluation.generate_set import (default_prompt_set, generate_set, load_prompt_set, precheck_resume, resume_header,
                               summary_path)

    prompts = args.prompts or str(default_prompt_set())
    rows = load_prompt_set(prompts)  # read before loading the model: a bad file fails in a second
    known = resume_header(rows, model_spec=args.model, dtype=args.dtype, chat_template=args.chat_template,
                          system=args.system, max_new_tokens=args.max_new_tokens, temperature=args.temperature,
                          top_p=args.top_p, seed=args.seed)
    if not args.chat_template:  # it comes from the model: checked by generate_set once the model is loaded
        known.pop("chat_template")
    refuse_finished(args.out, "--out", "a finished generation set", args.overwrite)  # (a partial one resumes)
    precheck_resume(args.out, known)  # a resume file of another run fails before the model loads
    model, tokenizer, template = load_for_inference(args.model, args.dtype, families=support.DECODING)
    summary = generate_set(
        model, tokenizer, rows, args.out, model_spec=args.model, generator=args.generator,
        chat_template=args.chat_template or template, system=args.system, max_new_tokens=args.max_new_tokens,
        temperature=args.temperature, top_p=args.top_p, seed=args.seed, batch_size=args.batch_size,
        dtype=args.dtype, limit=args.limit, prompts_file=prompts,
    )
    metrics = summary["metrics"]
    print(f"wrote {args.out}: {metrics['n']} outputs of {summary['model']}, mean {metrics['avg_output_words']:.1f} "
          f"words / {metrics['avg_output_tokens']:.1f} tokens; summary {summary_path(args.out)}")
    return 0


def _cmd_bleu_train(args) -> int:
    from ..evaluation.generate_set import summary_path
    from ..evaluation.memorisation import bleu_train

    summary = bleu_train(args.outputs, args.references, args.summary)
    metrics = summary["metrics"]
    settings = summary.get("generation_settings") or {}
    if settings.get("temperature", 0) > 0:
        print(f"warning: {args.outputs} was sampled (temperature {settings['temperature']}); the IM paper's "
              "Table 2 uses greedy outputs")
    print(f"BLEU-4 {metrics['bleu']:.2f} (corpus, 13a), mean sentence BLEU {metrics['sentence_bleu_mean']:.2f}, "
          f"n={metrics['n']}, mean words output {metrics['avg_output_words']:.1f} / reference "
          f"{metrics['avg_reference_words']:.1f}; summary {args.summary or summary_path(args.outputs, 'bleu')}")
    return 0


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "generate-set", help="answer a prompt set (AlpacaEval's 805 by default) and write AlpacaEval model_outputs",
        description="Generate answers of MODEL ('default', a hub id, a directory, a .gguf or a run dir) to a prompt "
        "set and write an AlpacaEval model_outputs JSON; a killed run resumes from OUT.json.partial.jsonl.")
    p.add_argument("--model", default="default", help="model spec or posttrain run directory (default: default)")
    p.add_argument("--prompts", metavar="FILE",
                   help="AlpacaEval JSON or instruction-data file (default: AlpacaEval's 805 prompts under the "
                   "data root)")
    p.add_argument("--limit", type=int, metavar="N", help="only the first N prompts")
    p.add_argument("--out", required=True, metavar="FILE.json", help="where the model_outputs JSON goes")
    p.add_argument("--overwrite", action="store_true", help="replace a finished OUT.json (a partial one resumes)")
    p.add_argument("--generator", help="the 'generator' name written in every row (default: the --model string)")
    p.add_argument("--max-new-tokens", type=int, default=512)
    p.add_argument("--temperature", type=float, default=0.0, help="0 = greedy (default)")
    p.add_argument("--top-p", type=float, default=1.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--chat-template", help="override the chat template (tokenizer, tulu, chatml, plain)")
    p.add_argument("--system", help="system message for prompts that have none")
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16", "auto"])
    p.set_defaults(func=_cmd_generate_set)

    p = subparsers.add_parser(
        "bleu-train", help="memorisation: BLEU-4 of greedy outputs against the training targets (IM paper Table 2)",
        description="Corpus BLEU-4 (sacrebleu, 13a) of generate-set outputs on a training file against that "
        "file's last assistant turns, row by row.")
    p.add_argument("--outputs", required=True, metavar="FILE.json", help="generate-set output on the training file")
    p.add_argument("--references", required=True, metavar="TRAIN_FILE", help="the training data file")
    p.add_argument("--summary", metavar="PATH", help="summary JSON (default: FILE.bleu.json next to the outputs)")
    p.set_defaults(func=_cmd_bleu_train)
