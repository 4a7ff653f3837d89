"""config/fields.py: build_dataclass (unknown keys with did-you-mean, missing keys, typed coercion errors naming
source and key, nested sections, typed=False, on_error rewording), did_you_mean, help_field's per-instance
copies of list/dict defaults."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Literal, Optional

import pytest

from posttrain.config import build_dataclass, did_you_mean, help_field
from posttrain.errors import ConfigError


@dataclass
class Inner:
    depth: int = help_field(1, "How deep.")
    label: str = help_field("x", "A name.")


@dataclass
class Outer:
    required: str = help_field(dataclasses.MISSING, "No default.")
    rate: float = help_field(0.1, "A rate.")
    flag: bool = help_field(False, "A switch.")
    choice: Literal["alpha", "beta"] = help_field("alpha", "One of two.")
    tags: list = help_field(["t"], "A list.")  # noqa: RUF009  (a default_factory)
    extra: dict = help_field({"k": 1}, "A mapping.")  # noqa: RUF009
    maybe: Optional[int] = help_field(None, "Optional.")  # noqa: UP045  (typing.Union, as in the schema)
    newer: int | None = help_field(None, "Optional, PEP 604.")
    inner: Inner = field(default_factory=Inner)

    def __post_init__(self):
        if isinstance(self.rate, (int, float)) and self.rate < 0:
            raise ConfigError("rate: must be >= 0")


@dataclass
class TwoRequired:
    a: int
    b: int


def _error(raw, cls=Outer, **kw) -> str:
    with pytest.raises(ConfigError) as err:
        build_dataclass(cls, raw, "f.yaml", **kw)
    assert "\n" not in str(err.value)
    return str(err.value)


def test_builds_typed_values_and_nested_sections():
    got = build_dataclass(Outer, {"required": "r", "rate": "1e-4", "flag": True, "choice": "beta", "tags": "solo",
                                  "maybe": 3, "newer": 4.0, "inner": {"depth": 2.0}}, "f.yaml")
    assert got == Outer(required="r", rate=1e-4, flag=True, choice="beta", tags=["solo"], maybe=3, newer=4,
                        inner=Inner(depth=2))
    assert isinstance(got.newer, int)
    assert build_dataclass(Outer, {"required": "r", "maybe": None, "newer": None}, "f.yaml").newer is None
    assert isinstance(got.rate, float) and isinstance(got.inner.depth, int)
    assert build_dataclass(Outer, {"required": 5, "inner": None}, "f.yaml") == Outer(required="5")  # YAML "inner:"


def test_unknown_key_suggests_the_nearest_one():
    assert _error({"required": "r", "rtae": 1}) == "f.yaml: unknown key 'rtae'; did you mean 'rate'?"
    assert _error({"required": "r", "inner": {"dpeth": 2}}) == \
        "f.yaml: unknown key 'inner.dpeth'; did you mean 'inner.depth'?"
    assert _error({"zzzz": 1}, cls=Inner, prefix="sec.") == "f.yaml: unknown key 'sec.zzzz'"


def test_missing_required_keys():
    assert _error({"rate": 0.5}) == "f.yaml: missing key required"
    assert _error({}, cls=TwoRequired) == "f.yaml: missing keys a, b"
    assert _error({"b": 1}, cls=TwoRequired, prefix="sec.") == "f.yaml: missing key sec.a"


@pytest.mark.parametrize("raw, message", [
    ({"rate": "fast"}, "f.yaml: rate: expected a number, got 'fast'"),
    ({"rate": True}, "f.yaml: rate: expected a number, got True"),
    ({"flag": "yes"}, "f.yaml: flag: expected true or false, got 'yes'"),
    ({"choice": "gamma"}, "f.yaml: choice: expected one of alpha, beta, got 'gamma'"),
    ({"choice": "alpah"}, "f.yaml: choice: expected one of alpha, beta, got 'alpah'; did you mean 'alpha'?"),
    ({"choice": False}, ("f.yaml: choice: expected one of alpha, beta, got False (YAML reads no, off, yes and on as "
                         "true/false: quote the word)")),
    ({"maybe": 2.5}, "f.yaml: maybe: expected an integer, got 2.5"),
    ({"maybe": True}, "f.yaml: maybe: expected an integer, got True"),
    ({"newer": "3"}, "f.yaml: newer: expected an integer, got '3'"),
    ({"tags": {"a": 1}}, "f.yaml: tags: expected a list, got {'a': 1}"),
    ({"extra": [1]}, "f.yaml: extra: expected a mapping, got [1]"),
    ({"inner": {"depth": "deep"}}, "f.yaml: inner.depth: expected an integer, got 'deep'"),
    ({"inner": {"label": ["x"]}}, "f.yaml: inner.label: expected a string, got ['x']"),
    ({"inner": 5}, "f.yaml: inner must be a mapping, got int"),
])
def test_typed_coercion_errors_name_source_and_key(raw, message):
    assert _error({"required": "r", **raw}) == message


def test_the_top_level_must_be_a_mapping():
    assert _error([1, 2]) == "f.yaml: the file must be a mapping, got list"
    assert _error("text", cls=Inner, prefix="sec.") == "f.yaml: sec must be a mapping, got str"


def test_untyped_build_passes_values_through():
    got = build_dataclass(Outer, {"required": 5, "rate": "fast", "flag": "yes", "inner": {"depth": "deep"}},
                          "f.yaml", typed=False)
    assert got.required == 5 and got.rate == "fast" and got.flag == "yes"
    assert got.inner == {"depth": "deep"}  # not built into Inner either
    # unknown and missing keys are still refused
    assert _error({"required": 1, "rtae": 1}, typed=False) == "f.yaml: unknown key 'rtae'; did you mean 'rate'?"
    assert _error({}, typed=False) == "f.yaml: missing key required"


def test_post_init_errors_are_reworded_by_on_error():
    assert _error({"required": "r", "rate": -1}) == "f.yaml: rate: must be >= 0"
    assert _error({"required": "r", "rate": -1}, prefix="sec.") == "f.yaml: sec.rate: must be >= 0"
    assert _error({"required": "r", "rate": -1}, prefix="rate") == "f.yaml: rate: must be >= 0"  # not doubled
    seen = []

    def reword(source, prefix, err):
        seen.append((source, prefix, str(err)))
        return ConfigError(f"{source} <{prefix}> {err}")

    with pytest.raises(ConfigError) as err:
        build_dataclass(Outer, {"required": "r", "rate": -1}, "f.yaml", prefix="p.", on_error=reword)
    assert str(err.value) == "f.yaml <p.> rate: must be >= 0"
    assert seen == [("f.yaml", "p.", "rate: must be >= 0")]
    assert err.value.__cause__ is None and err.value.__suppress_context__  # raised `from None`: one clean line


def test_did_you_mean():
    assert did_you_mean("learnig_rate", ["learning_rate", "seed"]) == "; did you mean 'learning_rate'?"
    assert did_you_mean("sed", ["seed", "learning_rate"], shown="train.") == "; did you mean 'train.seed'?"
    assert did_you_mean("qqqq", ["learning_rate", "seed"]) == ""
    assert did_you_mean(3, [1, 3]) == "; did you mean '3'?"  # non-string names and options
    assert did_you_mean("ab", ["abcd"]) == "; did you mean 'abcd'?"  # ratio 2*2/6 = 0.67 >= 0.5
    assert did_you_mean("ab", ["abcd"], cutoff=0.9) == ""
    assert did_you_mean("x", []) == ""


def test_help_field_copies_list_and_dict_defaults_per_instance():
    one, two = Outer(required="a"), Outer(required="b")
    assert one.tags == ["t"] and one.extra == {"k": 1}
    assert one.tags is not two.tags and one.extra is not two.extra
    one.tags.append("u")
    one.extra["k"] = 2
    assert two.tags == ["t"] and two.extra == {"k": 1} and Outer(required="c").tags == ["t"]
    fields = {f.name: f for f in dataclasses.fields(Outer)}
    assert fields["tags"].metadata["help"] == "A list." and fields["rate"].metadata["help"] == "A rate."
    assert fields["rate"].default == 0.1 and fields["tags"].default is dataclasses.MISSING
    assert fields["required"].default is dataclasses.MISSING and fields["required"].default_factory is \
        dataclasses.MISSING
    kw = help_field(3, "With kwargs.", repr=False)
    assert kw.repr is False and kw.default == 3
