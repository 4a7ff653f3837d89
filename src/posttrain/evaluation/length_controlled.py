"""AlpacaEval 2.0's length-controlled (LC) win rate, computed by the alpaca_eval package's own GLM code.

Dubois et al., "Length-Controlled AlpacaEval: A Simple Way to Debias Automatic Evaluators" (COLM 2024), fit a
logistic regression (GLM) to the judge's preferences for the model (output_2) over the baseline (output_1):

    P(model preferred | i) = sigmoid( theta * tanh(std_delta_len_i) + phi * difficulty_i + psi )

with std_delta_len_i = (len_1 - len_2) / std(len_1 - len_2) (characters), difficulty_i a per-instruction term
fitted once by AlpacaEval over many models, and psi the model-vs-baseline term (``not_gamed_baseline``). The LC
win rate is the model's predicted win rate with the length difference set to zero:

    LC = 100 * mean_i sigmoid( phi * difficulty_i + psi )

posttrain calls ``alpaca_eval.metrics.glm_winrate.get_length_controlled_winrate`` with one of the package's own
formulas (``GLM_INFO``):

- ``length_controlled_noreg`` (the formula above) when the user gives AlpacaEval's per-instruction difficulty table;
- ``length_controlled_minimal`` (no difficulty term: length and baseline only) otherwise, labelled as such.

Not offered: ``length_controlled_v1``, the leaderboard's variant, which also regularises psi towards two "gamed"
baselines whose annotations (``df_gamed.csv``) the package downloads from the Hugging Face hub. The package reads
its difficulty column from that download in every variant; here the download is replaced by a local stand-in file
(row i = judged pair i, with the user's difficulty or 0, unused by the minimal formula), so nothing is fetched.

The difficulty table is AlpacaEval's ``instruction_difficulty.csv`` (first column the instruction's index in the
805-instruction evaluation set, second its difficulty) or any CSV with ``index`` and ``instruction_difficulty``
columns (``df_gamed.csv`` has both; the first row of an index counts, as in the package). A judged pair's index is
the row of its instruction in the ``--references`` file: AlpacaEval's reference files list the evaluation set in
order.
"""

from __future__ import annotations

import csv
import math
import tempfile
import warnings
from contextlib import ExitStack
from pathlib import Path
from unittest import mock

from ..errors import DataError, first_line

WITH_DIFFICULTY = "length_controlled_noreg"
LENGTH_ONLY = "length_controlled_minimal"
LABELS = {
    WITH_DIFFICULTY: "AlpacaEval GLM length_controlled_noreg: length, instruction difficulty and baseline terms "
                     "(no regularisation to the gamed baselines)",
    LENGTH_ONLY: "AlpacaEval GLM length_controlled_minimal: length and baseline terms only (no instruction "
                 "difficulty table given)",
}
GAMED_FILE = "df_gamed.csv"  # the one file the package's GLM fetches from the hub


def read_difficulty_table(path: str | Path) -> dict[int, float]:
    """{instruction index: difficulty} from AlpacaEval's per-instruction table (see the module docstring)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: file not found (expected AlpacaEval's instruction_difficulty.csv)")
    try:
        with open(path, newline="", encoding="utf-8") as handle:
            lines = list(csv.reader(handle))
    except (UnicodeDecodeError, csv.Error) as err:
        raise DataError(f"{path}: not a readable CSV ({first_line(err)})") from None
    if not lines:
        raise DataError(f"{path}: empty file (expected a header and one row per instruction)")
    header = [name.strip() for name in lines[0]]
    if "index" in header and "instruction_difficulty" in header:
        index_col, value_col = header.index("index"), header.index("instruction_difficulty")
    elif len(header) == 2:
        index_col, value_col = 0, 1
    else:
        raise DataError(f"{path}: header {header}: expected columns 'index' and 'instruction_difficulty', or two "
                        "columns (index, difficulty) as in AlpacaEval's instruction_difficulty.csv")
    table: dict[int, float] = {}
    for line_number, cells in enumerate(lines[1:], start=2):
        if not cells:
            continue
        if len(cells) <= max(index_col, value_col):
            raise DataError(f"{path}: line {line_number}: expected {len(header)} fields, got {len(cells)}")
        try:
            index = int(cells[index_col])
        except ValueError:
            raise DataError(f"{path}: line {line_number}: field {header[index_col]!r}: {cells[index_col]!r} is not "
                            "an integer index") from None
        try:
            value = float(cells[value_col])
        except ValueError:
            value = math.nan
        if not math.isfinite(value):
            raise DataError(f"{path}: line {line_number}: field {header[value_col]!r}: {cells[value_col]!r} is not "
                            "a finite number")
        table.setdefault(index, value)
    if not table:
        raise DataError(f"{path}: no rows after the header")
    return table


def difficulties_for(positions: list[int], table: dict[int, float], table_path, references_path,
                     instructions: list[str]) -> list[float]:
    """The difficulty of each judged pair, looked up by its instruction's row in the references file."""
    values = []
    for position, instruction in zip(positions, instructions):
        if position not in table:
            shown = instruction[:50] + ("..." if len(instruction) > 50 else "")
            raise DataError(f"{table_path}: no instruction_difficulty for index {position} (row {position} of "
                            f"{references_path}: {shown!r}); the table must cover the references' rows")
        values.append(table[position])
    return values


def length_controlled_win_rate(annotations: list[dict], difficulties: list[float] | None = None) -> dict:
    """LC win rate (%) of ``generator_2`` over ``generator_1`` from AlpacaEval annotations, by the package's GLM.

    Returns ``{"lc_win_rate", "lc_stderr", "lc_form", "lc_label", "lc_extreme_change", "alpaca_eval_win_rate"}``
    (``lc_extreme_change``: the package's own test for an LC figure far from the raw one, a sign the GLM failed).
    Raises ``ValueError`` with the reason when the GLM cannot be fitted (too few pairs, no length variation)."""
    import pandas as pd

    from .alpaca_package import require

    glm = require("alpaca_eval.metrics.glm_winrate", needed_for="the length-controlled win rate")
    form = WITH_DIFFICULTY if difficulties is not None else LENGTH_ONLY
    minimum = glm.GLM_INFO[form]["kwargs"]["n_splits"]  # its cross-validation needs a group per fold
    rated = [a for a in annotations if a["preference"] is not None]
    if len(rated) < minimum:
        raise ValueError(f"{len(rated)} annotated pairs; the GLM's {minimum}-fold cross-validation needs >= {minimum}")
    if difficulties is not None and len(difficulties) != len(annotations):
        raise ValueError(f"{len(difficulties)} difficulties for {len(annotations)} annotations")
    delta = [len(a["output_1"]) - len(a["output_2"]) for a in annotations]
    if max(delta) == min(delta):  # std_delta_len would divide by a zero standard deviation
        raise ValueError("every pair has the same length difference; the length term cannot be fitted")
    columns = ["instruction", "output_1", "output_2", "generator_1", "generator_2", "preference"]
    frame = pd.DataFrame([{c: a[c] for c in columns} for a in annotations])  # RangeIndex: row i = pair i
    with tempfile.TemporaryDirectory(prefix="posttrain_lc_") as tmp, ExitStack() as stack:
        stand_in = Path(tmp) / GAMED_FILE
        pd.DataFrame({"model": "none", "index": range(len(frame)),
                      "instruction_difficulty": difficulties if difficulties is not None else 0.0}
                     ).to_csv(stand_in, index=False)

        def local_download(*, filename, **_):
            if filename != GAMED_FILE:
                raise ValueError(f"alpaca_eval asked for {filename!r}, which posttrain cannot provide offline")
            return str(stand_in)

        stack.enter_context(mock.patch.object(glm, "hf_hub_download", local_download))
        stack.enter_context(warnings.catch_warnings())
        warnings.simplefilter("ignore")  # scikit-learn's deprecation notices about the package's arguments
        metrics = glm.get_length_controlled_winrate(frame, glm_name=form, save_weights_dir=None,
                                                    is_add_glm_preference_inplace=False,
                                                    is_warn_extreme_changes=False)
    lc, raw = float(metrics["length_controlled_winrate"]), float(metrics["win_rate"])
    if not math.isfinite(lc):
        raise ValueError("the GLM predicted no finite win rate")
    return {"lc_win_rate": lc, "lc_stderr": float(metrics["lc_standard_error"]), "lc_form": form,
            "lc_label": LABELS[form], "lc_extreme_change": bool(glm.get_is_extreme_changes(raw, lc)),
            "alpaca_eval_win_rate": raw}
