"""io_utils: atomic writes leave the old or the new file, and a killed write's temporary file is cleaned up."""

from __future__ import annotations

import os
import tempfile

import pytest

from posttrain.io_utils import atomic_write_text, remove_stale_temp_files


def test_a_failed_atomic_write_keeps_the_old_file_and_leaves_no_temp_file(tmp_path, monkeypatch):
    path = tmp_path / "metrics.jsonl"
    atomic_write_text(path, "old\n")

    def fail(*_):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", fail)
    with pytest.raises(OSError, match="disk full"):
        atomic_write_text(path, "new\n")
    assert path.read_text() == "old\n" and sorted(p.name for p in tmp_path.iterdir()) == ["metrics.jsonl"]


def test_remove_stale_temp_files_removes_only_killed_writes(tmp_path):
    fd, killed = tempfile.mkstemp(dir=tmp_path, prefix=".config.yaml.", suffix=".tmp")  # what atomic_write makes
    os.close(fd)
    keep = [tmp_path / "config.yaml", tmp_path / ".hidden.tmp", tmp_path / "notes.tmp"]
    for p in keep:
        p.write_text("x")
    (tmp_path / ".dir.x.tmp").mkdir()  # not a file
    (tmp_path / "sub").mkdir()
    nested = tmp_path / "sub" / ".a.b.tmp"
    nested.write_text("x")  # not recursive
    assert remove_stale_temp_files(tmp_path) == [tmp_path / os.path.basename(killed)]
    assert all(p.exists() for p in keep) and nested.exists() and (tmp_path / ".dir.x.tmp").is_dir()
    assert remove_stale_temp_files(tmp_path / "missing") == []


def test_safetensors_damage_reads_the_header_only(tmp_path):
    import torch
    from safetensors.torch import save_file

    from posttrain.io_utils import safetensors_damage

    path = tmp_path / "w.safetensors"
    save_file({"a": torch.zeros(4, 8), "b": torch.ones(3)}, str(path))
    assert safetensors_damage(path) is None
    whole = path.read_bytes()
    path.write_bytes(whole[:-5])
    assert safetensors_damage(path) == f"cut short ({len(whole) - 5} of {len(whole)} bytes)"
    path.write_bytes(b"\x05\x00\x00\x00\x00\x00\x00\x00{nope")
    assert safetensors_damage(path).startswith("no readable safetensors header")
    path.write_bytes(whole[:6])
    assert safetensors_damage(path) == "no readable safetensors header (6 bytes)"


def test_refuse_finished_names_the_file_and_the_way_out(tmp_path):
    from posttrain.errors import ConfigError
    from posttrain.io_utils import refuse_finished

    done = tmp_path / "judge_summary.json"
    refuse_finished(done, "--out", "a finished judgement", overwrite=False)  # nothing there: fine
    done.write_text("{}")
    with pytest.raises(ConfigError) as err:
        refuse_finished(done, "--out", "a finished judgement", overwrite=False)
    assert str(err.value) == (f"--out: {done} holds a finished judgement; pass --overwrite to replace it or choose "
                              "another --out")
    refuse_finished(done, "--out", "a finished judgement", overwrite=True)  # the user said so
