"""posttrain judge: win-rate aggregation with order swapping, the HTTP judge against a real loopback server, the
local judge's padded batches against a brute-force forward pass, and the command's files and errors."""

from __future__ import annotations

import json
import math
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from posttrain.errors import ConfigError, DataError, ModelLoadError
from posttrain.evaluation.judge import (
    LETTERS, LocalJudge, evaluate_pairs, judge_messages, pair_with_references, preference_from_logprobs,
    preference_from_text, truncate,
)
from posttrain.evaluation.judge_http import HttpJudge, HttpJudgeConfig, cache_key


# ---------------------------------------------------------------- aggregation on fixed verdicts

class FixedJudge:
    """P(first better) looked up by (instruction, first output); records what it was asked."""

    def __init__(self, table):
        self.table, self.asked = table, []

    def prefer_first(self, triples):
        self.asked.extend(triples)
        return [self.table[(instruction, first)] for instruction, first, _ in triples]


def rows(pairs):
    return [{"instruction": i, "output": o} for i, o in pairs]


A = rows([("i1", "a one"), ("i2", "a two words"), ("i3", "a3")])
B = rows([("i1", "b"), ("i2", "b two"), ("i3", "b three x y")])
TABLE = {("i1", "a one"): 0.8, ("i1", "b"): 0.3,              # pref (0.8 + 0.7) / 2 = 0.75
         ("i2", "a two words"): 0.6, ("i2", "b two"): 0.6,    # pref 0.5: a tie, and the orders disagree
         ("i3", "a3"): 0.1, ("i3", "b three x y"): 0.9}       # pref (0.1 + 0.1) / 2 = 0.1


def test_swapped_orders_and_aggregation_by_hand():
    judge = FixedJudge(TABLE)
    verdicts, metrics = evaluate_pairs(judge, A, B)
    assert judge.asked == [("i1", "a one", "b"), ("i2", "a two words", "b two"), ("i3", "a3", "b three x y"),
                           ("i1", "b", "a one"), ("i2", "b two", "a two words"), ("i3", "b three x y", "a3")]
    assert [v.preference_a for v in verdicts] == pytest.approx([0.75, 0.5, 0.1])
    assert [v.p_b_first for v in verdicts] == [0.3, 0.6, 0.9]
    assert [v.orders_disagree for v in verdicts] == [False, True, False]
    # mean 0.45; squared deviations 0.09 + 0.0025 + 0.1225 = 0.215; std (ddof 1) = sqrt(0.215 / 2)
    assert metrics["win_rate"] == pytest.approx(45.0)
    assert metrics["stderr"] == pytest.approx(100 * math.sqrt(0.215 / 2) / math.sqrt(3))
    assert (metrics["n"], metrics["ties"], metrics["order_disagreements"], metrics["unparseable"]) == (3, 1, 1, 0)
    assert metrics["avg_chars_a"] == pytest.approx((5 + 11 + 2) / 3)
    assert metrics["avg_chars_b"] == pytest.approx((1 + 5 + 11) / 3)
    assert metrics["avg_words_a"] == pytest.approx((2 + 3 + 1) / 3)
    assert metrics["avg_words_b"] == pytest.approx((1 + 2 + 4) / 3)
    assert verdicts[1].record() == {"instruction": "i2", "p_a_first": 0.6, "p_b_first": 0.6, "preference_a": 0.5,
                                    "orders_disagree": True}


def test_no_swap_uses_the_first_order_only():
    judge = FixedJudge(TABLE)
    verdicts, metrics = evaluate_pairs(judge, A, B, swap=False)
    assert len(judge.asked) == 3 and all(first.startswith("a") for _, first, _ in judge.asked)
    assert metrics["win_rate"] == pytest.approx(100 * (0.8 + 0.6 + 0.1) / 3)
    assert metrics["order_disagreements"] == 0 and verdicts[0].p_b_first is None
    _, single = evaluate_pairs(judge, A[:1], B[:1])
    assert single["stderr"] == 0.0 and single["win_rate"] == pytest.approx(75.0)


def test_pairing_by_instruction_limit_and_missing_reference(tmp_path):
    rows_a = rows([("q2", "x"), ("q1", "y"), ("q9", "z")])
    rows_b = rows([("q1", "r1"), ("q2", "r2")])
    kept_a, kept_b = pair_with_references(rows_a, rows_b, "a.json", "refs.json", limit=2)
    assert [r["output"] for r in kept_a] == ["x", "y"] and [r["output"] for r in kept_b] == ["r2", "r1"]
    with pytest.raises(DataError, match=r"^refs\.json: no reference output for the instruction of a\.json row 2"):
        pair_with_references(rows_a, rows_b, "a.json", "refs.json")


def test_letter_probabilities_text_verdicts_and_prompt():
    assert preference_from_logprobs({" a": math.log(0.6), "A": math.log(0.2), "b": math.log(0.1), "x": -0.1}) \
        == pytest.approx(0.8 / 0.9)
    assert preference_from_logprobs({"a": -3.0}) == 1.0 and preference_from_logprobs({"Sure": -0.1}) is None
    assert [preference_from_text(t) for t in ("a", " (B)", "**a**", "A.", "answer", "", None)] == \
        [1.0, 0.0, 1.0, 1.0, None, None, None]
    messages = judge_messages("Do X", "first " * 3, "y" * 50, max_output_chars=10)
    assert [m["role"] for m in messages] == ["system", "user"]
    user = messages[1]["content"]
    assert "Do X" in user and "Output (a)" in user and "Output (b)" in user and '"a"' in user and '"b"' in user
    assert truncate("y" * 50, 10) in user and "y" * 11 not in user


# ---------------------------------------------------------------- HTTP judge against a loopback server

def completion(content="a", top=None):
    choice = {"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}
    if top is not None:
        choice["logprobs"] = {"content": [{"token": content, "logprob": -0.1,
                                           "top_logprobs": [{"token": t, "logprob": lp} for t, lp in top]}]}
    return {"id": "x", "object": "chat.completion", "choices": [choice]}


class FakeAPI:
    """A real HTTP server on 127.0.0.1: ``behave(api, body)`` returns (status, body bytes or object, delay s)."""

    def __init__(self, behave):
        self.behave, self.bodies, self.headers = behave, [], []
        api = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                api.bodies.append(body)
                api.headers.append(dict(self.headers))
                status, payload, delay = api.behave(api, body) if self.path == "/v1/chat/completions" \
                    else (404, b"no such path", 0)
                time.sleep(delay)
                data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except OSError:  # the client gave up (timeout test)
                    pass

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads, self.server.block_on_close = True, False
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        self.base_url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"

    @property
    def count(self):
        return len(self.bodies)


@pytest.fixture
def fake_api():
    servers = []

    def start(behave):
        servers.append(FakeAPI(behave))
        return servers[-1]

    yield start
    for api in servers:
        api.server.shutdown()
        api.server.server_close()


def http_judge(api, tmp_path=None, **overrides):
    options = dict(base_url=api.base_url, model="judge-1", api_key_env="POSTTRAIN_TEST_UNSET_KEY", max_retries=2,
                   retry_delay=0.001, read_timeout=2.0, connect_timeout=2.0,
                   cache_path=tmp_path / "cache.jsonl" if tmp_path else None)
    options.update(overrides)
    return HttpJudge(HttpJudgeConfig(**options), progress=False)


TRIPLE = ("Say hi", "hi", "hello there")


def test_http_logprobs_request_shape_and_no_key_on_loopback(fake_api):
    api = fake_api(lambda api, body: (200, completion("a", [("a", math.log(0.7)), ("b", math.log(0.2)),
                                                            (" a", math.log(0.05)), ("The", -4.0)]), 0))
    assert http_judge(api).prefer_first([TRIPLE]) == [pytest.approx(0.75 / 0.95)]
    body = api.bodies[0]
    assert body["model"] == "judge-1" and body["messages"] == judge_messages(*TRIPLE)
    assert (body["temperature"], body["logprobs"], body["top_logprobs"]) == (0, True, 5) and body["max_tokens"] <= 8
    assert "Authorization" not in api.headers[0]


def test_http_text_only_and_unparseable_answers(fake_api, monkeypatch):
    answers = iter(["b", "A", "I think both are fine"])
    api = fake_api(lambda api, body: (200, completion(next(answers)), 0))
    monkeypatch.setenv("POSTTRAIN_TEST_KEY", "sk-test")
    judge = http_judge(api, api_key_env="POSTTRAIN_TEST_KEY")
    assert judge.prefer_first([("q1", "x", "y"), ("q2", "x", "y"), ("q3", "x", "y")]) == [0.0, 1.0, 0.5]
    assert judge.unparseable == 1 and api.headers[0]["Authorization"] == "Bearer sk-test"


def test_http_retries_on_500_then_succeeds(fake_api):
    api = fake_api(lambda api, body: (500, {"error": "busy"}, 0) if api.count <= 2 else (200, completion("b"), 0))
    judge = http_judge(api)
    assert judge.prefer_first([TRIPLE]) == [0.0] and api.count == 3


def test_http_always_500_gives_one_line_error_after_retries(fake_api):
    api = fake_api(lambda api, body: (503, {"error": "down"}, 0))
    with pytest.raises(ModelLoadError) as caught:
        http_judge(api).prefer_first([TRIPLE])
    message = str(caught.value)
    assert "\n" not in message and api.base_url + "/chat/completions" in message
    assert "after 3 attempt(s)" in message and "HTTP 503" in message and api.count == 3


def test_http_stalled_server_times_out_and_retries(fake_api):
    api = fake_api(lambda api, body: (200, completion("a"), 1.5))
    started = time.monotonic()
    with pytest.raises(ModelLoadError, match="gave up after 2 attempt.*timed out"):
        http_judge(api, read_timeout=0.2, max_retries=1).prefer_first([TRIPLE])
    assert api.count == 2 and time.monotonic() - started < 1.4


def test_http_malformed_json_is_retried(fake_api):
    api = fake_api(lambda api, body: (200, b"{not json", 0) if api.count == 1 else (200, completion("a"), 0))
    assert http_judge(api).prefer_first([TRIPLE]) == [1.0] and api.count == 2
    broken = fake_api(lambda api, body: (200, {"choices": []}, 0))
    with pytest.raises(ModelLoadError, match=r"unexpected JSON \(no choices\[0\]\.message\)"):
        http_judge(broken, max_retries=1).prefer_first([TRIPLE])


def test_http_client_error_is_not_retried_and_key_is_required_off_loopback(fake_api):
    api = fake_api(lambda api, body: (401, {"error": "bad key"}, 0))
    with pytest.raises(ModelLoadError, match="HTTP 401.*not retried"):
        http_judge(api).prefer_first([TRIPLE])
    assert api.count == 1
    with pytest.raises(ConfigError, match="^--api-key-env POSTTRAIN_TEST_UNSET_KEY: environment variable"):
        HttpJudge(HttpJudgeConfig(base_url="https://judge.example.org/v1", api_key_env="POSTTRAIN_TEST_UNSET_KEY"))


def test_http_cache_rerun_makes_no_requests_and_resumes(fake_api, tmp_path):
    first_output_wins = lambda api, body: (200, completion("a"), 0)  # noqa: E731
    api = fake_api(first_output_wins)
    triples = [("q1", "x", "y"), ("q2", "x", "y"), ("q3", "x", "y")]
    assert http_judge(api, tmp_path).prefer_first(triples) == [1.0, 1.0, 1.0] and api.count == 3
    assert http_judge(api, tmp_path).prefer_first(triples) == [1.0, 1.0, 1.0] and api.count == 3
    lines = (tmp_path / "cache.jsonl").read_text().splitlines()
    key = cache_key(api.base_url, "judge-1", judge_messages(*triples[0]))
    assert len(lines) == 3 and json.loads(lines[0]) == {"key": key, "p_first": 1.0, "source": "text",
                                                        "raw": {"content": "a", "top_logprobs": None}}
    # an interrupted run: the last verdict lost and the line before it cut mid-write
    (tmp_path / "cache.jsonl").write_text(lines[0] + "\n" + lines[1][:20])
    assert http_judge(api, tmp_path).prefer_first(triples) == [1.0, 1.0, 1.0] and api.count == 5
    assert len(http_judge(api, tmp_path).cache) == 3


# ---------------------------------------------------------------- local judge: padded batch vs brute force

def test_local_judge_batch_matches_single_unpadded_forward(tokenizer, tiny_llama):
    import torch

    from posttrain.data.chat import generation_prompt, resolve_template

    judge = LocalJudge(tiny_llama, tokenizer, "tokenizer", batch_size=4, progress=False)
    triples = [("Write a poem about the sea.", "The sea is wide and blue.", "Blue."),
               ("What is the capital of France?", "Paris", "Paris is the capital of France. " * 3),
               ("Translate to French: good morning.", "Bonjour.", "bonjour"),
               ("Summarize the text.", "0 1 2", "The quick brown fox jumps over the lazy dog.")]
    got = judge.prefer_first(triples)
    assert all(ids for ids in judge.letter_ids.values()) and set(judge.letter_ids) == set(LETTERS)
    template = resolve_template(tokenizer, "tokenizer")
    lengths = set()
    for triple, p in zip(triples, got):
        text = generation_prompt(tokenizer, judge_messages(*triple), template)
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        lengths.add(len(ids))
        with torch.no_grad():
            last = tiny_llama(torch.tensor([ids])).logits[0, -1].double()
        mass = {x: last[judge.letter_ids[x]].exp().sum() for x in LETTERS}
        assert p == pytest.approx(float(mass["a"] / (mass["a"] + mass["b"])), abs=1e-5)
    assert len(lengths) == 4  # four different prompt lengths in one padded batch


# ---------------------------------------------------------------- the command

def parser():
    from posttrain.cli import OneLineErrorParser
    from posttrain.cli.judge import register

    top = OneLineErrorParser(prog="posttrain")
    register(top.add_subparsers(dest="command"))
    return top


def write_outputs(path, items, generator):
    path.write_text(json.dumps([{"instruction": i, "output": o, "generator": generator, "dataset": "t"}
                                for i, o in items]))
    return path


def prefers_good(api, body):
    """Picks the output containing GOOD; with neither, picks the second one (a position-biased judge)."""
    user = body["messages"][1]["content"]
    first = user.split("## Output (a)")[1].split("## Output (b)")[0]
    second = user.split("## Output (b)")[1].split("## Your verdict")[0]
    return 200, completion("a" if "GOOD" in first else "b" if "GOOD" in second else "b"), 0


def test_cli_http_judge_writes_files_and_rerun_uses_cache(fake_api, tmp_path, capsys):
    api = fake_api(prefers_good)
    outputs = write_outputs(tmp_path / "mine.json", [("q1", "GOOD one"), ("q2", "meh"), ("q3", "GOOD three")], "m1")
    refs = write_outputs(tmp_path / "refs.json", [("q3", "r3"), ("q2", "r2"), ("q1", "r1"), ("q4", "r4")], "davinci")
    argv = ["judge", str(outputs), "--references", str(refs), "--out", str(tmp_path / "out"), "--judge", "http",
            "--base-url", api.base_url, "--api-model", "judge-1", "--retry-delay", "0.001", "--quiet"]
    args = parser().parse_args(argv)
    assert args.func(args) == 0 and api.count == 6
    summary = json.loads((tmp_path / "out" / "judge_summary.json").read_text())
    assert (summary["kind"], summary["model"], summary["reference"]) == ("judge", "m1", "davinci")
    metrics = summary["metrics"]
    # prefs 1, 0.5 (both orders picked the second output), 1
    assert metrics["win_rate"] == pytest.approx(250 / 3)
    assert metrics["stderr"] == pytest.approx(100 * math.sqrt(1 / 12) / math.sqrt(3))
    assert (metrics["n"], metrics["ties"], metrics["order_disagreements"], metrics["unparseable"]) == (3, 1, 1, 0)
    verdicts = [json.loads(line) for line in (tmp_path / "out" / "verdicts.jsonl").read_text().splitlines()]
    assert [(v["instruction"], v["p_a_first"], v["p_b_first"], v["preference_a"]) for v in verdicts] == \
        [("q1", 1.0, 0.0, 1.0), ("q2", 0.0, 0.0, 0.5), ("q3", 1.0, 0.0, 1.0)]
    assert "83.33 ± 16.67" in (tmp_path / "out" / "judge.md").read_text()
    assert "win rate 83.33 ± 16.67, LC not computed: 3 annotated pairs; the GLM's 5-fold cross-validation" in \
        capsys.readouterr().out
    annotations = json.loads((tmp_path / "out" / "annotations.json").read_text())
    assert [(a["instruction"], a["output_1"], a["output_2"], a["generator_1"], a["generator_2"], a["preference"])
            for a in annotations] == [("q1", "r1", "GOOD one", "davinci", "m1", 2.0), ("q2", "r2", "meh", "davinci",
                                      "m1", 1.5), ("q3", "r3", "GOOD three", "davinci", "m1", 2.0)]
    assert annotations[1]["raw_completion"] == {"output_2_shown_first": {"content": "b", "top_logprobs": None},
                                                "output_1_shown_first": {"content": "b", "top_logprobs": None}}
    assert summary["length_controlled"]["form"] is None and "lc_win_rate" not in metrics
    from posttrain.errors import ConfigError

    with pytest.raises(ConfigError, match="judge_summary.json holds a finished judgement; pass --overwrite"):
        parser().parse_args(argv).func(parser().parse_args(argv))  # never overwritten without a word
    assert api.count == 6
    args = parser().parse_args(argv + ["--limit", "2", "--overwrite"])
    assert args.func(args) == 0 and api.count == 6  # every verdict is cached
    assert json.loads((tmp_path / "out" / "judge_summary.json").read_text())["metrics"]["n"] == 2


def test_cli_errors(fake_api, tmp_path, capsys):
    api = fake_api(prefers_good)
    outputs = write_outputs(tmp_path / "mine.json", [("q1", "GOOD"), ("unknown question", "x")], "")
    refs = write_outputs(tmp_path / "refs.json", [("q1", "r1")], "davinci")
    base = ["judge", str(outputs), "--references", str(refs), "--out", str(tmp_path / "out"), "--judge", "http",
            "--base-url", api.base_url]
    args = parser().parse_args(base)
    with pytest.raises(DataError, match=rf"^{refs}: no reference output .* {outputs} row 1 \('unknown question'\)"):
        args.func(args)
    assert api.count == 0
    args = parser().parse_args(base + ["--limit", "0"])
    with pytest.raises(ConfigError, match="^--limit 0: expected an integer >= 1"):
        args.func(args)
    with pytest.raises(SystemExit) as exited:
        parser().parse_args(base + ["--judge", "oracle"])
    assert exited.value.code == 2 and capsys.readouterr().err.count("\n") == 1
    args = parser().parse_args(base + ["--limit", "1", "--no-swap", "--quiet"])
    assert args.func(args) == 0 and api.count == 1
    summary = json.loads((tmp_path / "out" / "judge_summary.json").read_text())
    assert summary["model"] == "mine" and summary["swap"] is False  # no generator field: the file stem


def test_cli_local_judge_on_a_model_directory(tiny_model_dir, tmp_path):
    outputs = write_outputs(tmp_path / "a.json", [("Write a poem about the sea.", "The sea is blue.")], "m")
    refs = write_outputs(tmp_path / "b.json", [("Write a poem about the sea.", "Waves.")], "ref")
    args = parser().parse_args(["judge", str(outputs), "--references", str(refs), "--out", str(tmp_path / "o"),
                                "--judge-model", str(tiny_model_dir), "--batch-size", "2", "--quiet"])
    assert args.func(args) == 0
    summary = json.loads((tmp_path / "o" / "judge_summary.json").read_text())
    assert summary["judge"] == f"local:{tiny_model_dir}" and 0.0 <= summary["metrics"]["win_rate"] <= 100.0
