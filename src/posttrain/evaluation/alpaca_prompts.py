"""AlpacaEval's evaluator configurations as prompts for the HTTP judge (``posttrain judge --judge-prompt NAME``).

An AlpacaEval evaluator (``alpaca_eval/evaluators_configs/<NAME>/configs.yaml`` in the installed package, e.g.
``weighted_alpaca_eval_gpt4_turbo``, AlpacaEval 2.0's judge, or ``alpaca_eval_gpt4``, AlpacaEval 1.0's) names a
prompt template with ``{instruction}``, ``{output_1}``, ``{output_2}`` in ChatML-style ``<|im_start|>role ...
<|im_end|>`` blocks, the request settings (``completions_kwargs``: model, max_tokens, temperature, logprobs,
top_logprobs, tools), and a completion parser with its arguments. Everything here is read from the installed
package and run with its own functions:

- the prompt: ``alpaca_eval.utils.make_prompts`` fills the template, and ``utils.prompt_to_chatml`` turns the
  stripped text into chat messages, as its ``openai_completions`` decoder does;
- the verdict: the configured parser from ``alpaca_eval.completion_parsers`` reads either the answer text (the
  message content; a tool call's arguments; " " for an empty answer, as the decoder does) or, with
  ``completion_key: completions_all``, the whole choice object. ``logprob_parser`` gives the log-probability
  weighted preference 2 - P(m) / (P(m) + P(M)) over the top log-probabilities of the first answer token.

The parser's preference p in [1, 2] (1: output_1 better) becomes P(first better) = 2 - p; 0 and 1.5 are draws
(0.5); NaN, None, a parse error or a count other than one is *unparseable* (0.5, counted). posttrain still asks each
pair in both orders (its own bias cancelling), so the configs' random output order is not used. Only configs that
call ``openai_completions`` with one example per prompt, no pre/post-processors and no logit biases can run this
way (``unsupported_reason`` says why one cannot).
"""

from __future__ import annotations

import functools
import logging
import math
import numbers
from contextlib import contextmanager

from ..errors import ConfigError
from .alpaca_package import require, version

# completions_kwargs keys that are request-body fields of /chat/completions (the rest are the decoder's own)
REQUEST_FIELDS = ("max_tokens", "temperature", "top_p", "logprobs", "top_logprobs", "tools", "tool_choice",
                  "functions", "function_call", "response_format", "seed", "stop", "presence_penalty",
                  "frequency_penalty")
DECODER_ONLY = ("model_name", "is_strip", "num_procs", "price_per_token", "requires_chatml", "is_chat",
                "client_kwargs", "n_retries", "sleep_time")


def _modules(name: str):
    needed_for = f"--judge-prompt {name}"
    return (require("alpaca_eval.constants", needed_for=needed_for), require("alpaca_eval.utils", needed_for=needed_for),
            require("alpaca_eval.completion_parsers", needed_for=needed_for))


def unsupported_reason(config: dict) -> str | None:
    """Why an evaluator configuration cannot run through posttrain's HTTP judge, or None if it can."""
    if config.get("fn_completions", "openai_completions") != "openai_completions":
        return f"it calls {config['fn_completions']}, not an OpenAI-compatible endpoint"
    if int(config.get("batch_size", 1)) != 1:
        return f"it puts {config['batch_size']} examples in one prompt"
    if config.get("processors_to_kwargs"):
        return f"it needs the processors {', '.join(config['processors_to_kwargs'])}"
    kwargs = config.get("completions_kwargs") or {}
    if kwargs.get("tokens_to_avoid") or kwargs.get("tokens_to_favor"):
        return "its logit biases need the judge model's tokenizer"
    if "model_name" not in kwargs:
        return "it names no model"
    decoder = require("alpaca_eval.decoders.openai", needed_for="an AlpacaEval evaluator prompt")
    # the package's decoder picks the endpoint from the model name (text-davinci-003, *-instruct: text completions)
    if not kwargs.get("requires_chatml", decoder._requires_chatml(kwargs["model_name"])) or \
            kwargs.get("is_chat") is False:
        return "it uses the text-completions endpoint"
    unknown = sorted(set(kwargs) - set(REQUEST_FIELDS) - set(DECODER_ONLY))
    if unknown:
        return f"it sets {', '.join(unknown)}"
    return None


def evaluator_names() -> tuple[list[str], dict[str, str]]:
    """(configs this judge can run, {other config: why not}) among the installed package's evaluators."""
    constants, utils, _ = _modules("NAME")
    usable, other = [], {}
    for folder in sorted(constants.EVALUATORS_CONFIG_DIR.iterdir()):
        if (folder / "configs.yaml").is_file():
            config = utils.load_configs(folder).get(folder.name)
            reason = unsupported_reason(config) if isinstance(config, dict) else "its configs.yaml has no such entry"
            if reason:
                other[folder.name] = reason
            else:
                usable.append(folder.name)
    return usable, other


@contextmanager
def _quiet_package_logging():
    """The parsers log a traceback for every answer they cannot read; posttrain counts those instead."""
    previous = logging.root.manager.disable
    logging.disable(logging.CRITICAL)
    try:
        yield
    finally:
        logging.disable(previous)


class AlpacaEvaluatorPrompt:
    """The prompt, request settings and verdict parser of one installed AlpacaEval evaluator configuration."""

    def __init__(self, name: str):
        constants, self._utils, parsers = _modules(name)
        folder = constants.EVALUATORS_CONFIG_DIR / name
        if "/" in name or name.startswith(".") or not (folder / "configs.yaml").is_file():
            usable, _ = evaluator_names()
            raise ConfigError(f"--judge-prompt {name}: no evaluator configuration of that name in alpaca_eval "
                              f"{version()} (choose posttrain or one of: {', '.join(usable)})")
        config = self._utils.load_configs(folder).get(name)
        reason = unsupported_reason(config) if isinstance(config, dict) else "its configs.yaml has no such entry"
        if reason:
            raise ConfigError(f"--judge-prompt {name}: {folder / 'configs.yaml'} cannot run through posttrain's "
                              f"HTTP judge: {reason}")
        self.name, self.config = name, config
        self.template = self._utils.read_or_return(config["prompt_template"], relative_to=constants.EVALUATORS_CONFIG_DIR)
        parser_name = config.get("fn_completion_parser", "regex_parser")  # SinglePairwiseAnnotator's default
        self.parser = functools.partial(self._utils.get_module_attribute(parsers, parser_name),
                                        **(config.get("completion_parser_kwargs") or {}))
        self.parser_name = parser_name
        self.completion_key = config.get("completion_key", "completions")
        kwargs = config["completions_kwargs"]
        self.model_name = kwargs["model_name"]
        self.request_fields = {k: v for k, v in kwargs.items() if k in REQUEST_FIELDS}

    def describe(self) -> str:
        return f"alpaca_eval {version()} evaluator {self.name} (parser {self.parser_name})"

    def messages(self, instruction: str, first: str, second: str) -> list[dict]:
        import pandas as pd

        frame = pd.DataFrame([{"instruction": instruction, "output_1": first, "output_2": second}])
        prompts, _ = self._utils.make_prompts(frame, self.template, batch_size=1)
        return self._utils.prompt_to_chatml(prompts[0].strip())

    def body(self, model: str, messages: list[dict]) -> dict:
        return {"model": model, "messages": messages, **self.request_fields}

    def parse(self, data: dict, choice: dict) -> tuple[float, str, object]:
        """(P(first better), "alpaca_eval" | "unparseable", the raw answer) from a chat-completions response."""
        message = choice.get("message") or {}
        text = message.get("content")
        if message.get("function_call"):
            text = message["function_call"].get("arguments")
        if message.get("tool_calls"):
            text = message["tool_calls"][0]["function"].get("arguments")
        text = " " if text in ("", None) else text
        if self.completion_key == "completions":
            completion, raw = text, text
        else:
            usage = data.get("usage") or {}
            completion = {**choice, "text": text, "total_tokens": usage.get("total_tokens", 0)}
            raw = {"text": text, "logprobs": choice.get("logprobs")}
        try:
            with _quiet_package_logging():
                preferences = list(self.parser(completion))
        except Exception:  # any parser failure is the package's "no annotation"
            return 0.5, "unparseable", raw
        if len(preferences) != 1 or not _is_number(preferences[0]):
            return 0.5, "unparseable", raw
        preference = float(preferences[0])
        if preference in (0.0, 1.5):
            return 0.5, "alpaca_eval", raw
        if not 1.0 <= preference <= 2.0:
            return 0.5, "unparseable", raw
        return 2.0 - preference, "alpaca_eval", raw


def _is_number(value) -> bool:
    # numbers.Real also covers the numpy scalars the parsers return
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and not math.isnan(value)
