"""posttrain: post-training methods for language models when labelled data is scarce.

Implements the methods of Z. Shi's thesis (UCL, 2025) and its papers: instruction modelling (IM), prompt-based
fine-tuning and PCP, DePT, and the StepGame benchmark, on Hugging Face transformers / PEFT.
"""

from .version import __version__  # noqa: E402

from .config import RunConfig, load_config  # noqa: E402
from .errors import ConfigError, DataError, ModelLoadError, PosttrainError  # noqa: E402
from . import methods  # noqa: E402,F401  (registers every method before a config can ask for one)

# the Python API (api.py), imported on first use so that `import posttrain` and the CLI stay quick
_API = ("train", "load_run", "TrainResult", "prompt_tuning", "dept", "sft_dataset", "LabelsCollator",
        "SoftPromptModel", "label_scorer", "get_task", "read_split", "stepgame_generate", "stepgame_solve",
        "stepgame_evaluate")


def __getattr__(name: str):
    if name in _API:
        from . import api

        return getattr(api, name)
    raise AttributeError(f"module 'posttrain' has no attribute {name!r}")


__all__ = ["RunConfig", "load_config", "PosttrainError", "ConfigError", "DataError", "ModelLoadError", "__version__",
           *_API]
