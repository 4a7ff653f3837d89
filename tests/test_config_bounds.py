"""Every number of a run config declares its bounds, and one generic check enforces them at load time.

The walk below covers every numeric field of every ``RunConfig`` section, so a field added later without bounds
fails here; each out-of-range value (below, above, NaN) given to ``posttrain train`` exits with status 2, one
``error:`` line naming the key, before anything is written.
"""

from __future__ import annotations

import dataclasses
import math
import typing

import pytest
import yaml

from posttrain.cli import main
from posttrain.config import RunConfig, load_config
from posttrain.config.fields import bounds_text, in_bounds, parse_bounds
from posttrain.errors import ConfigError

SECTIONS = {f.name: typing.get_type_hints(RunConfig)[f.name] for f in dataclasses.fields(RunConfig)}


def numeric_type(tp):
    """int or float for a numeric field (Optional included), else None; bool is not a number here."""
    args = [a for a in typing.get_args(tp) if a is not type(None)] if typing.get_args(tp) else [tp]
    return args[0] if len(args) == 1 and args[0] in (int, float) else None


def numeric_fields():
    for section, cls in SECTIONS.items():
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            if numeric_type(hints[f.name]) is not None:
                yield section, f, numeric_type(hints[f.name])


def out_of_range(bounds, kind) -> list:
    """Values just outside each finite end of ``bounds`` (and NaN for floats)."""
    low, high, low_in, high_in = bounds
    step = 1 if kind is int else 0.5
    values = []
    if not math.isinf(low):
        values.append(kind(low - step) if low_in else kind(low))
    if not math.isinf(high):
        values.append(kind(high + step) if high_in else kind(high))
    if kind is float:
        values.append(float("nan"))
    return values


CASES = [pytest.param(section, f.name, value, id=f"{section}.{f.name}={value}")
         for section, f, kind in numeric_fields() if "bounds" in f.metadata
         for value in out_of_range(f.metadata["bounds"], kind)]


def test_every_numeric_field_declares_its_bounds():
    missing = [f"{section}.{f.name}" for section, f, _ in numeric_fields() if "bounds" not in f.metadata]
    assert not missing, f"numeric config fields without bounds=...: {missing}"
    assert len(CASES) > 40


def test_defaults_lie_inside_their_bounds():
    cfg = RunConfig()
    for section, f, _ in numeric_fields():
        value = getattr(getattr(cfg, section), f.name)
        assert value is None or in_bounds(value, f.metadata["bounds"]), f"{section}.{f.name} default {value}"


@pytest.mark.parametrize("section,name,value", CASES)
def test_an_out_of_range_value_fails_at_load_with_nothing_written(section, name, value, tmp_path, capsys):
    run = tmp_path / "run"
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(yaml.safe_dump({"model": {"name_or_path": str(tmp_path / "no-model")},
                                      "data": {"train_file": str(tmp_path / "no-data.jsonl")},
                                      "train": {"output_dir": str(run), "max_steps": 1}}))
    assert main(["train", str(recipe), f"{section}.{name}={value}"]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and f"{section}.{name}: must be" in lines[0], lines
    assert not run.exists()


def test_bounds_read_as_intervals():
    assert parse_bounds("[0, 1)") == (0.0, 1.0, True, False)
    assert bounds_text(parse_bounds("(0, inf)")) == "> 0" and bounds_text(parse_bounds("[8, inf)")) == ">= 8"
    assert bounds_text(parse_bounds("[0, 1]")) == "in [0, 1]"
    assert in_bounds(0, parse_bounds("[0, 1)")) and not in_bounds(1, parse_bounds("[0, 1)"))
    assert not in_bounds(float("nan"), parse_bounds("(-inf, inf)"))
    with pytest.raises(ValueError, match="expected an interval"):
        parse_bounds("0..1")


def test_a_config_built_in_python_is_checked_too():
    from posttrain.config import TrainConfig

    with pytest.raises(ConfigError, match=r"train.adam_beta2: must be in \[0, 1\), got 1.5"):
        RunConfig(train=TrainConfig(adam_beta2=1.5))
    assert load_config(None, ["train.adam_beta2=0.999"]).train.adam_beta2 == 0.999


# The configs of multi-run recipes and their parts: the same declaration and the same check.
from posttrain.config import build_dataclass  # noqa: E402
from posttrain.methods.self_training import SelfTrainingConfig  # noqa: E402
from posttrain.methods.text_augment import AugmentConfig  # noqa: E402
from posttrain.pipelines.continued_pretraining import ContinuedPretrainingConfig  # noqa: E402
from posttrain.pipelines.pcp_config import PCPConfig  # noqa: E402

OTHER_CONFIGS = {  # class -> the keys it needs to be built at all
    SelfTrainingConfig: {"recipe": "r.yaml"},
    AugmentConfig: {},
    ContinuedPretrainingConfig: {},
    PCPConfig: {"teacher_recipe": "t.yaml", "final_recipe": "f.yaml"},
}


def other_fields():
    for cls, needed in OTHER_CONFIGS.items():
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            if numeric_type(hints[f.name]) is not None:
                yield cls, needed, f, numeric_type(hints[f.name])


def test_every_numeric_field_of_the_other_configs_declares_its_bounds():
    missing = [f"{cls.__name__}.{f.name}" for cls, _, f, _ in other_fields() if "bounds" not in f.metadata]
    assert not missing, f"numeric config fields without bounds=...: {missing}"


@pytest.mark.parametrize("cls,needed,name,value", [
    pytest.param(cls, needed, f.name, value, id=f"{cls.__name__}.{f.name}={value}")
    for cls, needed, f, kind in other_fields() for value in out_of_range(f.metadata["bounds"], kind)])
def test_an_out_of_range_value_of_the_other_configs_is_refused(cls, needed, name, value):
    shown = "augment." if cls is AugmentConfig else ""  # it is always the augment: section of a self-training file
    with pytest.raises(ConfigError, match=rf"^f\.yaml: {shown}{name}: must be"):
        build_dataclass(cls, {**needed, name: value}, "f.yaml")
