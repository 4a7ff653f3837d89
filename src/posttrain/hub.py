"""Share an exported run on the Hugging Face Hub: ``posttrain export RUN --to FORM --out DIR --push-to-hub REPO``.

The export folder is written first (never half: ``export.export_run``), a model card (``README.md``) is put in it,
then ``huggingface_hub.HfApi`` creates the repository if needed and uploads the folder in one commit. The endpoint
is huggingface_hub's own (``HF_ENDPOINT``, default https://huggingface.co) and the token its own (``HF_TOKEN`` or
``hf auth login``), or the variable ``--hub-token-env`` names. A failed push is a one-line error; the local export
stays, so the push can be retried with huggingface_hub's own ``hf upload REPO DIR``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from .errors import ConfigError, PosttrainError
from .version import __version__

LIBRARY = {"peft": "peft", "merged": "transformers", "standalone": "posttrain"}


def model_card(run_dir: Path, form: str, cfg) -> str:
    """A short model card: base model, method, form and how to load it, from the run's config and metadata."""
    meta_path = Path(run_dir) / "run_meta.json"
    meta = json.loads(meta_path.read_text()) if meta_path.is_file() else {}
    base = str(cfg.model.name_or_path)
    header = ["---", f"library_name: {LIBRARY[form]}", "tags:", "- posttrain", f"- {cfg.adapter.type}"]
    if "/" in base and not Path(base).exists():  # a hub id (a local path means nothing to the Hub)
        header.append(f"base_model: {base}")
    header.append("---")
    load = {
        "peft": "PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(BASE), REPO)",
        "merged": "AutoModelForCausalLM.from_pretrained(REPO)  # or the Auto class of the run's head",
        "standalone": "posttrain.load_run(snapshot_download(REPO))",
    }[form]
    precision = meta.get("mixed_precision", {}).get("used", "none")
    body = [
        "", f"# {Path(run_dir).name}", "",
        f"Trained with posttrain {meta.get('posttrain', __version__)}: adapter.type `{cfg.adapter.type}` on "
        f"`{base}`, exported as `{form}`.", "",
        f"Load: `{load}`", "",
        f"Trained under mixed precision `{precision}`.",
    ]
    return "\n".join(header + body) + "\n"


def check_push(repo_id: str, token_env: str | None = None) -> str | None:
    """The token to push with (None: huggingface_hub's own); a malformed repository id or an unset token variable
    is an error before anything is exported."""
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    try:
        validate_repo_id(repo_id)
    except HFValidationError:
        repo_id = None
    if repo_id is None or repo_id.count("/") != 1:
        raise ConfigError("--push-to-hub: expected a repository id OWNER/NAME (letters, digits, '-', '_', '.')")
    if not token_env:
        return None
    token = os.environ.get(token_env)
    if not token:
        raise ConfigError(f"--hub-token-env: the environment variable {token_env} is not set")
    return token


def push_folder(folder: Path, repo_id: str, *, private: bool = False, token_env: str | None = None,
                commit_message: str | None = None) -> str:
    """Create ``repo_id`` if it does not exist and upload ``folder`` in one commit; returns the commit URL."""
    from huggingface_hub import HfApi
    from huggingface_hub.errors import HfHubHTTPError

    api = HfApi(token=check_push(repo_id, token_env))
    try:
        api.create_repo(repo_id, private=private, exist_ok=True)
        info = api.upload_folder(folder_path=str(folder), repo_id=repo_id,
                                 commit_message=commit_message or f"posttrain export of {Path(folder).name}")
    except (HfHubHTTPError, OSError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise PosttrainError(f"--push-to-hub: pushing {folder} to {repo_id} failed ({first}); the export is kept: "
                             f"retry with `hf upload {repo_id} {folder}`") from None
    return str(getattr(info, "commit_url", info))
