"""hub.py (``posttrain export ... --push-to-hub REPO``): the real huggingface_hub upload path, run against a local
HTTP stub of the Hub's API (create repo, preupload, commit), which rebuilds the pushed files from the commit so the
test can compare them byte for byte with the export; no network."""

from __future__ import annotations

import base64
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

import posttrain
from posttrain.cli import main
from test_engine import ROWS


class HubStub(BaseHTTPRequestHandler):
    """Just enough of the Hub's API for HfApi.create_repo + upload_folder with every file uploaded inline."""

    calls: list = []
    files: dict = {}
    fail_commit = False

    def log_message(self, *args):  # quiet
        pass

    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.server.server_port}"

    def _reply(self, status: int, body: dict) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        type(self).calls.append((self.path.split("?")[0], self.headers.get("Authorization")))
        if self.path.startswith("/api/repos/create"):
            payload = json.loads(body)
            return self._reply(200, {"url": f"{self.endpoint()}/{payload['organization']}/{payload['name']}"})
        if self.path.startswith("/api/validate-yaml"):  # the model card's metadata, checked by the Hub
            return self._reply(200, {"errors": [], "warnings": []})
        if "/preupload/" in self.path:
            files = json.loads(body)["files"]
            return self._reply(200, {"files": [{"path": f["path"], "uploadMode": "regular", "shouldIgnore": False}
                                               for f in files]})
        if "/commit/" in self.path:
            if type(self).fail_commit:
                return self._reply(403, {"error": "stub: this token cannot write to owner/name"})
            for line in body.decode().splitlines():
                entry = json.loads(line)
                if entry["key"] == "file":
                    type(self).files[entry["value"]["path"]] = base64.b64decode(entry["value"]["content"])
            return self._reply(200, {"commitUrl": f"{self.endpoint()}/owner/name/commit/" + "a" * 40,
                                     "commitOid": "a" * 40, "success": True})
        return self._reply(404, {"error": f"stub: no route {self.path}"})


@pytest.fixture
def hub(monkeypatch):
    from huggingface_hub import constants

    server = ThreadingHTTPServer(("127.0.0.1", 0), HubStub)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    HubStub.calls, HubStub.files, HubStub.fail_commit = [], {}, False
    monkeypatch.setattr(constants, "ENDPOINT", f"http://127.0.0.1:{server.server_port}")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)  # the tests run offline; the stub is local
    monkeypatch.setenv("STUB_TOKEN", "hf_stub_token")
    yield HubStub
    server.shutdown()


@pytest.fixture(scope="module")
def lora_run(tmp_path_factory, tiny_model_dir):
    root = tmp_path_factory.mktemp("hub")
    data = root / "train.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    return posttrain.train(None, f"model.name_or_path={tiny_model_dir}", f"data.train_file={data}",
                           "data.max_length=64", "adapter.type=lora", "adapter.lora_r=2", "train.max_steps=1",
                           "train.per_device_batch_size=4", "train.progress=false",
                           f"train.output_dir={root / 'run'}").run_dir


def test_push_uploads_exactly_the_export_with_a_model_card(hub, lora_run, tmp_path, capsys):
    out = tmp_path / "adapter"
    assert main(["export", str(lora_run), "--to", "peft", "--out", str(out), "--push-to-hub", "owner/name",
                 "--private", "--hub-token-env", "STUB_TOKEN"]) == 0
    local = {str(p.relative_to(out)): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    assert hub.files == local and "adapter_model.safetensors" in local  # every file, byte for byte
    card = local["README.md"].decode()
    assert card.startswith("---\nlibrary_name: peft\n") and "- lora" in card and "PeftModel.from_pretrained" in card
    paths = [p for p, _ in hub.calls]
    assert paths[0] == "/api/repos/create" and paths[-1] == "/api/models/owner/name/commit/main"
    assert all(auth == "Bearer hf_stub_token" for _, auth in hub.calls)
    assert "pushed" in capsys.readouterr().out


def test_a_failed_push_is_one_line_and_keeps_the_export(hub, lora_run, tmp_path, capsys):
    hub.fail_commit = True
    out = tmp_path / "merged"
    assert main(["export", str(lora_run), "--to", "merged", "--out", str(out), "--push-to-hub", "owner/name"]) == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if "error" in line.lower()]  # (progress bars)
    assert len(errors) == 1 and errors[0].startswith("error: --push-to-hub: pushing") and "hf upload" in errors[0]
    assert (out / "model.safetensors").is_file() and not hub.files


@pytest.mark.parametrize("argv, message", [
    (["--push-to-hub", "no-owner"], "--push-to-hub: expected a repository id OWNER/NAME"),
    (["--push-to-hub", "a/b/c"], "--push-to-hub: expected a repository id OWNER/NAME"),
    (["--push-to-hub", "owner/name", "--hub-token-env", "POSTTRAIN_UNSET_VAR"],
     "--hub-token-env: the environment variable POSTTRAIN_UNSET_VAR is not set"),
])
def test_bad_push_arguments_fail_before_the_export(lora_run, tmp_path, capsys, argv, message):
    out = tmp_path / "never"
    assert main(["export", str(lora_run), "--to", "peft", "--out", str(out), *argv]) == 2
    assert capsys.readouterr().err.startswith(f"error: {message}")
    assert not out.exists()


def test_every_export_has_a_model_card_naming_how_to_load_it(lora_run, tmp_path):
    main(["export", str(lora_run), "--to", "standalone", "--out", str(tmp_path / "alone")])
    card = (Path(tmp_path) / "alone" / "README.md").read_text()
    assert "library_name: posttrain" in card and "posttrain.load_run" in card
