"""``posttrain export``: a finished run as a PEFT adapter, a merged transformers model or a self-contained run."""

from __future__ import annotations


def _cmd_export(args) -> int:
    from ..export import export_run
    from ..hub import check_push, push_folder

    if args.push_to_hub:
        check_push(args.push_to_hub, args.hub_token_env)  # before the export's work
    out = export_run(args.run_dir, args.to, args.out)
    print(f"exported {args.run_dir} as {args.to} -> {out}")
    if args.push_to_hub:
        url = push_folder(out, args.push_to_hub, private=args.private, token_env=args.hub_token_env)
        print(f"pushed {out} -> {args.push_to_hub} ({url})")
    return 0


def register(sub) -> None:
    p = sub.add_parser("export", help="a finished run as a PEFT adapter, a merged model or a standalone run",
                       description="Write a finished run's weights in a form other tools load: peft (PEFT "
                       "PeftModel.from_pretrained: prompt tuning, LoRA), merged (a transformers model directory: "
                       "LoRA merged into the base, a full fine-tune), standalone (base model + weights + config, "
                       "loadable by posttrain.load_run and every posttrain command after a move).")
    p.add_argument("run_dir", metavar="RUN_DIR", help="a finished run directory (config.yaml and final/)")
    p.add_argument("--to", required=True, choices=["peft", "merged", "standalone"], help="the form to write")
    p.add_argument("--out", required=True, metavar="DIR", help="a new directory (never overwritten)")
    p.add_argument("--push-to-hub", metavar="REPO", help="then upload the export to this Hub repository "
                   "(OWNER/NAME; created if missing; endpoint HF_ENDPOINT, token HF_TOKEN or hf auth login)")
    p.add_argument("--private", action="store_true", help="create the Hub repository as private")
    p.add_argument("--hub-token-env", metavar="VAR", help="read the Hub token from this environment variable")
    p.set_defaults(func=_cmd_export)
