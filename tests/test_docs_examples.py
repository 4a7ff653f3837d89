"""Every Python code block in README.md and docs/*.md runs as written (a documented example must not break again).

Each block runs in its own interpreter from a fresh folder that sees the repository's ``configs/`` (the paths
the docs use), with the shared data when the checkout has it, offline.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BLOCK = re.compile(r"^```python\n(.*?)^```", re.S | re.M)
SHARED_DATA = ROOT.parent / "shared" / "data"


def python_blocks() -> list:
    found = []
    for path in [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]:
        text = path.read_text(encoding="utf-8")
        for match in BLOCK.finditer(text):
            line = text[: match.start()].count("\n") + 1
            found.append(pytest.param(match.group(1), id=f"{path.relative_to(ROOT)}:{line}"))
    return found


def test_the_docs_have_python_examples():
    assert python_blocks(), "no ```python block found: the example test below would pass vacuously"


@pytest.mark.parametrize("code", python_blocks())
def test_python_block_runs(code, tmp_path):
    needs_data = "task" in code or "grid" in code
    if needs_data and not SHARED_DATA.is_dir():
        pytest.skip(f"the example reads task data from {SHARED_DATA}, absent from this checkout")
    (tmp_path / "configs").symlink_to(ROOT / "configs")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
           "POSTTRAIN_DATA": str(SHARED_DATA)}
    result = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True,
                            timeout=600)
    assert result.returncode == 0, f"stdout:\n{result.stdout}\nstderr:\n{result.stderr}"
