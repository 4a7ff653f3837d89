"""--judge-prompt NAME: AlpacaEval's evaluator configurations through posttrain's HTTP judge.

The parity test serves the hand-written chat-completions responses of tests/fixtures/alpaca_eval_judge_responses.json
from a loopback server to both the alpaca_eval package's own annotator (its OpenAI decoder, parser and output-order
randomisation) and posttrain's HTTP judge, and checks they send the same prompts and read the same preferences."""

from __future__ import annotations

import json
import math
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from posttrain.errors import ConfigError
from posttrain.evaluation.judge import evaluate_pairs
from posttrain.evaluation.judge_http import HttpJudge, HttpJudgeConfig

from posttrain.evaluation.alpaca_package import available, require
from posttrain.evaluation.alpaca_prompts import AlpacaEvaluatorPrompt, evaluator_names

pytestmark = pytest.mark.skipif(not available(), reason="the alpaca_eval package (the alpaca extra) is not installed")

RECORDED = json.loads((Path(__file__).parent / "fixtures" / "alpaca_eval_judge_responses.json").read_text())
MODEL_OUTPUT, REFERENCE_OUTPUT = RECORDED["outputs"]["model"], RECORDED["outputs"]["reference"]


class ReplayServer:
    """Answers each request with the recorded response for (instruction, which output is shown first)."""

    def __init__(self, evaluator: str):
        self.responses = {(r["instruction"], r["shown_first"]): r["response"] for r in RECORDED["records"]
                          if r["evaluator"] == evaluator}
        self.asked: list[tuple[str, str, dict]] = []  # (instruction, shown first, request body)
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                text = "\n".join(m["content"] for m in body["messages"])
                instruction = next(i for i, _ in server.responses if i in text)
                first = "model" if text.index(MODEL_OUTPUT) < text.index(REFERENCE_OUTPUT) else "reference"
                server.asked.append((instruction, first, body))
                data = json.dumps(server.responses[(instruction, first)]).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        self.base_url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def replay():
    servers = []

    def start(evaluator):
        servers.append(ReplayServer(evaluator))
        return servers[-1]

    yield start
    for server in servers:
        server.close()


def posttrain_judge(server, name, **overrides):
    prompt = AlpacaEvaluatorPrompt(name)
    config = HttpJudgeConfig(base_url=server.base_url, model=prompt.model_name, api_key_env="POSTTRAIN_TEST_UNSET_KEY",
                             max_retries=0, **overrides)
    return HttpJudge(config, prompt=prompt, progress=False)


def package_preferences(server, name, instructions):
    """alpaca_eval's own head-to-head annotation: output_1 = the reference, output_2 = the model."""
    annotators = require("alpaca_eval.annotators", needed_for="the parity test")
    annotator = annotators.PairwiseAnnotator(annotators_config=name, caching_path=None, is_avoid_reannotations=False)
    annotated = annotator.annotate_head2head(
        outputs_1=[{"instruction": i, "output": REFERENCE_OUTPUT} for i in instructions],
        outputs_2=[{"instruction": i, "output": MODEL_OUTPUT} for i in instructions],
        openai_api_base=server.base_url, openai_api_keys=["sk-test"], client_config_path="/nonexistent.yaml",
        num_procs=1)
    return {row["instruction"]: row["preference"] for row in annotated}


@pytest.mark.parametrize("name", ["weighted_alpaca_eval_gpt4_turbo", "alpaca_eval_gpt4", "alpaca_eval_gpt4_turbo_fn"])
def test_parity_with_the_alpaca_eval_annotator_on_recorded_responses(replay, name):
    instructions = list(dict.fromkeys(r["instruction"] for r in RECORDED["records"] if r["evaluator"] == name))
    package_server, posttrain_server = replay(name), replay(name)
    package = package_preferences(package_server, name, instructions)
    package_order = {instruction: first for instruction, first, _ in package_server.asked}
    assert len(package_server.asked) == len(instructions) and set(package_order.values()) == {"model", "reference"}

    judge = posttrain_judge(posttrain_server, name)
    rows_a = [{"instruction": i, "output": MODEL_OUTPUT} for i in instructions]
    rows_b = [{"instruction": i, "output": REFERENCE_OUTPUT} for i in instructions]
    verdicts, metrics = evaluate_pairs(judge, rows_a, rows_b)
    assert len(posttrain_server.asked) == 2 * len(instructions)

    # the same prompt and request settings for the same order (the package adds its default top_p of 1)
    posttrain_bodies = {(i, first): body for i, first, body in posttrain_server.asked}
    for instruction, first, body in package_server.asked:
        ours = posttrain_bodies[(instruction, first)]
        assert ours["messages"] == body["messages"] and ours["model"] == body["model"]
        assert {k: v for k, v in body.items() if k not in ("messages", "top_p")} == \
            {k: v for k, v in ours.items() if k != "messages"}

    # the same preference for the order the package asked (preference 1: the reference, output_1, is better)
    compared = 0
    for verdict in verdicts:
        expected = package.get(verdict.instruction)  # the package drops rows it could not parse
        if package_order[verdict.instruction] == "model":
            ours, source = 1.0 + verdict.p_a_first, verdict.raw_a_first
        else:
            ours, source = 2.0 - verdict.p_b_first, verdict.raw_b_first
        if expected is None or (isinstance(expected, float) and math.isnan(expected)):
            assert ours == 1.5  # unparseable counts as no preference
        else:
            assert ours == pytest.approx(expected, abs=1e-12)
            compared += 1
        assert source is not None
    assert compared >= 3
    assert metrics["unparseable"] == {"weighted_alpaca_eval_gpt4_turbo": 1, "alpaca_eval_gpt4": 2,
                                      "alpaca_eval_gpt4_turbo_fn": 1}[name]


def test_logprob_weighting_by_hand(replay):
    """weighted_alpaca_eval_gpt4_turbo: P(first better) = P(m) / (P(m) + P(M)) over the first token's top list."""
    server = replay("weighted_alpaca_eval_gpt4_turbo")
    judge = posttrain_judge(server, "weighted_alpaca_eval_gpt4_turbo")
    got = judge.prefer_first([("Write a haiku about rain.", MODEL_OUTPUT, REFERENCE_OUTPUT),
                              ("Give me a synonym for happy.", MODEL_OUTPUT, REFERENCE_OUTPUT),
                              ("Explain what a prime number is.", MODEL_OUTPUT, REFERENCE_OUTPUT),
                              ("What is 17 times 3?", MODEL_OUTPUT, REFERENCE_OUTPUT)])
    m, big_m = math.exp(-0.9), math.exp(-0.53)
    assert got[0] == pytest.approx(m / (m + big_m))
    assert got[1] == pytest.approx(1.0)  # "M" absent from the top list: probability 0
    m, big_m = math.exp(-2.9), math.exp(-0.7)  # " m" (with a space) is not the token "m"
    assert got[2] == pytest.approx(m / (m + big_m))
    assert got[3] == 0.5 and judge.unparseable == 1  # neither token: no preference
    body = server.asked[0][2]
    assert (body["model"], body["max_tokens"], body["temperature"], body["logprobs"], body["top_logprobs"]) == \
        ("gpt-4-1106-preview", 1, 1, True, 5)
    assert judge.last_raw[0]["text"] == "M" and "top_logprobs" in judge.last_raw[0]["logprobs"]["content"][0]


def test_cache_keys_differ_between_evaluators_sharing_a_template(replay, tmp_path):
    """alpaca_eval_clf_gpt4_turbo binarises the same prompt weighted_alpaca_eval_gpt4_turbo weighs."""
    server = replay("weighted_alpaca_eval_gpt4_turbo")
    triple = [("Write a haiku about rain.", MODEL_OUTPUT, REFERENCE_OUTPUT)]
    cache = tmp_path / "cache.jsonl"
    weighted = posttrain_judge(server, "weighted_alpaca_eval_gpt4_turbo", cache_path=cache).prefer_first(triple)
    binary = posttrain_judge(server, "alpaca_eval_clf_gpt4_turbo", cache_path=cache).prefer_first(triple)
    assert 0.0 < weighted[0] < 0.5 and binary == [0.0] and len(server.asked) == 2
    assert posttrain_judge(server, "alpaca_eval_clf_gpt4_turbo", cache_path=cache).prefer_first(triple) == [0.0]
    assert len(server.asked) == 2  # cached


def test_unknown_and_unsupported_evaluators_are_one_line_errors():
    usable, other = evaluator_names()
    assert {"weighted_alpaca_eval_gpt4_turbo", "alpaca_eval_gpt4"} <= set(usable)
    assert "ChainOfThoughtProcessor" in other["alpaca_eval_cot_gpt4_turbo_fn"]
    with pytest.raises(ConfigError, match=r"^--judge-prompt no_such: no evaluator configuration .*choose posttrain"):
        AlpacaEvaluatorPrompt("no_such")
    with pytest.raises(ConfigError, match=r"^--judge-prompt claude: .*configs.yaml cannot run .*anthropic_completions"):
        AlpacaEvaluatorPrompt("claude")
    with pytest.raises(ConfigError, match="text-completions endpoint"):
        AlpacaEvaluatorPrompt("text_davinci_003")
    with pytest.raises(ConfigError, match="5 examples in one prompt"):
        AlpacaEvaluatorPrompt("alpaca_farm_greedy_gpt4")


def test_cli_judge_prompt_needs_the_http_judge(tmp_path, capsys):
    from posttrain.cli import main

    rows = json.dumps([{"instruction": "q", "output": "x"}])
    (tmp_path / "a.json").write_text(rows)
    assert main(["judge", str(tmp_path / "a.json"), "--references", str(tmp_path / "a.json"), "--out",
                 str(tmp_path / "o"), "--judge-prompt", "alpaca_eval_gpt4"]) == 2
    err = capsys.readouterr().err
    assert err == "error: --judge-prompt alpaca_eval_gpt4: needs --judge http (the local judge reads the answer " \
                  "letters of posttrain's own prompt)\n"
