"""An OpenAI-compatible chat-completions endpoint as pairwise judge (AlpacaEval 1.0 used GPT-4 this way).

Each (instruction, first, second) triple becomes one ``POST {base_url}/chat/completions`` with the judge messages
of ``judge.judge_messages``, ``temperature 0``, a few ``max_tokens`` and ``logprobs: true, top_logprobs: 5``.
P(first better) is read, in this order of preference, from

1. ``choices[0].logprobs.content[0].top_logprobs``: softmax over the log-probabilities of the letters' spellings
   (``judge.preference_from_logprobs``), a graded verdict as with a local judge;
2. the first letter of ``choices[0].message.content``: "a" -> 1.0, "b" -> 0.0; anything else is *unparseable*,
   counts as 0.5 (no preference) and is counted in ``unparseable``.

Failures that may pass (connection errors, timeouts, HTTP 429 and 5xx, a body that is not the expected JSON) are
retried with exponential backoff, ``retry_delay * 2**attempt`` seconds (at most ``max_delay``; a numeric
``Retry-After`` is honoured within that cap); other HTTP errors (401, 404, ...) stop at once. Either way the error
is one line naming the URL and the last failure.

With ``prompt=AlpacaEvaluatorPrompt(NAME)`` (``--judge-prompt NAME``) the messages, request fields and parsing
are those of an AlpacaEval evaluator configuration instead (``alpaca_prompts``); transport, retries and cache stay
the same.

Verdict cache: a JSON Lines file, one ``{"key", "p_first", "source", "raw"}`` per answered request (``raw``: the
answer text and top log-probabilities, what the annotations' ``raw_completion`` keeps), where ``key`` is the
sha256 of (base_url, model, messages), plus the evaluator's name for an AlpacaEval prompt (two evaluators may share
a template but parse it differently). Known keys are never asked again, so a rerun makes no requests; each verdict
is appended and fsynced as it arrives, so an interrupted run resumes where it stopped.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence
from urllib.parse import urlparse

from ..errors import ConfigError, ModelLoadError
from ..io_utils import append_jsonl
from .judge import judge_messages, preference_from_logprobs, preference_from_text

RETRY_STATUS = frozenset({429, 500, 502, 503, 504}) | frozenset(range(505, 600))


@dataclass
class HttpJudgeConfig:
    base_url: str = "https://api.openai.com/v1"
    model: str = "gpt-4"
    api_key_env: str = "OPENAI_API_KEY"
    connect_timeout: float = 10.0      # seconds to open the connection
    read_timeout: float = 120.0        # seconds to wait for the answer
    max_retries: int = 5               # retries after the first attempt
    retry_delay: float = 1.0           # backoff base: retry k waits retry_delay * 2**k seconds
    max_delay: float = 60.0
    max_tokens: int = 4                # "a" or "b" needs one token; a little slack for chatty endpoints
    max_output_chars: int | None = 2000
    cache_path: str | Path | None = None


def is_loopback(url: str) -> bool:
    host = urlparse(url).hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def cache_key(base_url: str, model: str, messages: list[dict], variant: str | None = None) -> str:
    # without a variant the key is what earlier versions wrote, so their caches stay valid
    parts = [base_url, model, messages] + ([variant] if variant is not None else [])
    payload = json.dumps(parts, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()


def load_cache(path: Path) -> dict[str, dict]:
    """key -> cached verdict; lines that do not parse (a line cut by a killed run) are skipped and asked again."""
    verdicts: dict[str, dict] = {}
    if not path.is_file():
        return verdicts
    data = path.read_bytes()
    for raw in data.splitlines():
        try:
            row = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError):
            continue
        if isinstance(row, dict) and isinstance(row.get("key"), str) and isinstance(row.get("p_first"), (int, float)):
            verdicts[row["key"]] = row
    if data and not data.endswith(b"\n"):  # a cut last line: end it so the next append starts a fresh line
        with open(path, "ab") as handle:
            handle.write(b"\n")
    return verdicts


class _Retryable(Exception):
    """A failure worth another attempt; its message describes it for the final error."""


class PosttrainPrompt:
    """posttrain's own judge prompt (``judge.judge_messages``) read by letter probabilities or the answer letter."""

    name = "posttrain"
    variant = None  # cache keys as before AlpacaEval prompts existed

    def __init__(self, max_tokens: int = 4, max_output_chars: int | None = 2000):
        self.max_tokens, self.max_output_chars = max_tokens, max_output_chars
        self.model_name = "gpt-4"

    def describe(self) -> str:
        return "posttrain prompt"

    def messages(self, instruction: str, first: str, second: str) -> list[dict]:
        return judge_messages(instruction, first, second, self.max_output_chars)

    def body(self, model: str, messages: list[dict]) -> dict:
        return {"model": model, "messages": messages, "temperature": 0, "max_tokens": self.max_tokens,
                "logprobs": True, "top_logprobs": 5}

    def parse(self, data: dict, choice: dict) -> tuple[float, str, object]:
        return read_verdict(data)


class HttpJudge:
    def __init__(self, config: HttpJudgeConfig, *, prompt=None, progress: bool = True, sleep=time.sleep):
        import requests

        self.config, self.progress, self._sleep = config, progress, sleep
        self.prompt = prompt or PosttrainPrompt(config.max_tokens, config.max_output_chars)
        self.variant = getattr(self.prompt, "variant", self.prompt.name)
        self.url = config.base_url.rstrip("/") + "/chat/completions"
        if urlparse(self.url).scheme not in ("http", "https") or not urlparse(self.url).hostname:
            raise ConfigError(f"--base-url {config.base_url!r}: expected an http(s) URL such as "
                              "https://api.openai.com/v1")
        if config.max_retries < 0 or config.retry_delay < 0 or config.connect_timeout <= 0 or config.read_timeout <= 0:
            raise ConfigError("judge: timeouts must be > 0, max retries and retry delay >= 0")
        self.headers = {"Content-Type": "application/json"}
        key = os.environ.get(config.api_key_env) if config.api_key_env else None
        if key:
            self.headers["Authorization"] = f"Bearer {key}"
        elif not is_loopback(self.url):
            raise ConfigError(f"--api-key-env {config.api_key_env}: environment variable {config.api_key_env} is not "
                              f"set (the API key for {config.base_url}; only loopback endpoints need none)")
        self.session = requests.Session()
        self.cache_path = Path(config.cache_path) if config.cache_path else None
        self.cache = load_cache(self.cache_path) if self.cache_path else {}
        self.unparseable = 0
        self.requests_made = 0
        self.last_raw: list = []  # what the judge answered, one entry per triple of the last prefer_first call

    def describe(self) -> str:
        judge = f"http:{self.config.model}@{self.config.base_url}"
        return judge if self.prompt.name == "posttrain" else f"{judge} ({self.prompt.describe()})"

    def prefer_first(self, triples: Sequence[tuple[str, str, str]]) -> list[float]:
        from tqdm.auto import tqdm

        result, self.last_raw = [], []
        for triple in tqdm(triples, desc="judge", unit="request", disable=not self.progress, dynamic_ncols=True):
            messages = self.prompt.messages(*triple)
            key = cache_key(self.config.base_url, self.config.model, messages, self.variant)
            verdict = self.cache.get(key)
            if verdict is None:
                p_first, source, raw = self._ask(messages)
                verdict = {"key": key, "p_first": p_first, "source": source, "raw": raw}
                if self.cache_path is not None:
                    append_jsonl(self.cache_path, verdict)
                self.cache[key] = verdict
            if verdict.get("source") == "unparseable":
                self.unparseable += 1
            result.append(float(verdict["p_first"]))
            self.last_raw.append(verdict.get("raw"))  # None for a verdict cached by an older version
        return result

    def _ask(self, messages: list[dict]) -> tuple[float, str, object]:
        """(P(first better), how it was read, the raw answer) for one prompt, with retries."""
        body = self.prompt.body(self.config.model, messages)
        attempts = self.config.max_retries + 1
        for attempt in range(attempts):
            try:
                return self._post(body)
            except _Retryable as failure:
                last_failure, retry_after = str(failure), getattr(failure, "retry_after", None)
            if attempt + 1 < attempts:
                delay = min(self.config.max_delay, self.config.retry_delay * 2 ** attempt)
                if retry_after is not None:
                    delay = min(self.config.max_delay, max(delay, retry_after))
                self._sleep(delay)
        raise ModelLoadError(f"judge: {self.url}: gave up after {attempts} attempt(s); last failure: {last_failure}")

    def _post(self, body: dict) -> tuple[float, str, object]:
        import requests

        self.requests_made += 1
        timeout = (self.config.connect_timeout, self.config.read_timeout)
        try:
            response = self.session.post(self.url, json=body, headers=self.headers, timeout=timeout)
        except requests.Timeout:
            raise _Retryable(f"timed out (connect {timeout[0]:g} s, read {timeout[1]:g} s)") from None
        except requests.RequestException as err:  # connection refused, reset, DNS, ...
            raise _Retryable(f"connection failed ({type(err).__name__})") from None
        if response.status_code in RETRY_STATUS:
            failure = _Retryable(f"HTTP {response.status_code} {_excerpt(response.text)}".rstrip())
            failure.retry_after = _seconds(response.headers.get("Retry-After"))
            raise failure
        if response.status_code >= 400:
            detail = " ".join(filter(None, [f"HTTP {response.status_code}", _excerpt(response.text)]))
            raise ModelLoadError(f"judge: {self.url}: {detail}; not retried (check the URL, --api-model and the "
                                 "API key)")
        try:
            data = response.json()
        except ValueError:
            raise _Retryable(f"malformed JSON in the response body {_excerpt(response.text)}".rstrip()) from None
        return self.prompt.parse(data, _first_choice(data))


def _first_choice(data) -> dict:
    try:
        choice = data["choices"][0]
        choice["message"].get("content")
    except (KeyError, IndexError, TypeError, AttributeError):
        raise _Retryable("unexpected JSON (no choices[0].message)") from None
    return choice


def read_verdict(data) -> tuple[float, str, object]:
    """(P(first better), "logprobs" | "text" | "unparseable", raw answer) from a chat-completions response object.

    The raw answer is ``{"content", "top_logprobs"}`` (the table as {token: log-prob}, or None)."""
    try:
        choice = data["choices"][0]
        content = choice["message"].get("content")
    except (KeyError, IndexError, TypeError, AttributeError):
        raise _Retryable("unexpected JSON (no choices[0].message)") from None
    logprobs = choice.get("logprobs") if isinstance(choice, dict) else None
    try:
        top = logprobs["content"][0]["top_logprobs"]
        table = {item["token"]: float(item["logprob"]) for item in top}
    except (KeyError, IndexError, TypeError, ValueError):
        table = {}  # no (usable) log-probabilities: fall back to the answer text
    raw = {"content": content, "top_logprobs": table or None}
    p_first = preference_from_logprobs(table) if table else None
    if p_first is not None:
        return p_first, "logprobs", raw
    if content is not None and not isinstance(content, str):
        raise _Retryable("unexpected JSON (choices[0].message.content is not a string)")
    p_first = preference_from_text(content)
    if p_first is not None:
        return p_first, "text", raw
    return 0.5, "unparseable", raw


def _excerpt(text: str, limit: int = 120) -> str:
    text = " ".join((text or "").split())
    return f"({text[:limit]}{'...' if len(text) > limit else ''})" if text else ""


def _seconds(value: str | None) -> float | None:
    try:
        return max(0.0, float(value)) if value is not None else None
    except ValueError:
        return None  # an HTTP date: the exponential backoff decides instead
