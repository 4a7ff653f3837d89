"""StepGame template inventory: recovered from the released data, defects flagged, two consistent sets."""

from pathlib import Path

import pytest

from posttrain.stepgame.formats import read_json
from posttrain.stepgame.templates import (
    INVERSE, RELATIONS, defective_keys, label_of, load_inventory, reading_table, recover_from_data, sentence_key,
)

DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "stepgame"
PER_LIST = {"left": 24, "right": 24, "above": 28, "below": 28, "lower-left": 27, "upper-right": 27,
            "lower-right": 28, "upper-left": 28}


def test_inventory_sizes_and_note():
    inv = load_inventory()
    assert "Recovered from the released StepGame data" in inv.note
    assert {rel: len(inv.original[rel]) for rel in RELATIONS} == PER_LIST
    assert {rel: len(inv.corrected[rel]) for rel in RELATIONS} == PER_LIST  # all ten are fixed, none dropped
    for rel in RELATIONS:
        for tpl in inv.original[rel]:
            assert "{X}" in tpl.text and tpl.count > 0
            assert tpl.text.count("{Y}") >= (0 if tpl.defect and tpl.defect["kind"] == "self-reference" else 1)


def test_ten_defects_flagged_with_reason_and_fix():
    inv = load_inventory()
    bad = inv.defective()
    assert len(bad) == 10
    assert sorted(t.relation for t in bad) == sorted(
        ["right"] * 4 + ["below"] + ["lower-left"] * 2 + ["lower-right"] + ["upper-left"] * 2)
    for tpl in bad:
        assert tpl.defect["reason"] and tpl.defect["fix"] and "{Y}" in tpl.defect["fix"]
        assert tpl.defect["reads_as"] != tpl.relation
    assert not any(t.defect for rel in RELATIONS for t in inv.corrected[rel])
    keys = defective_keys()  # the lower-right and upper-left 45-degree defects share one surface form
    assert len(keys) == 9
    assert len(keys["{A} is to the right and above {B} at an angle of about 45 degrees."]) == 2


def test_reading_tables():
    literal = reading_table("corrected")
    assert all(len(v) == 1 for v in literal.values())  # the literal reading is never ambiguous
    original = reading_table("original")
    assert len(original) == 209  # distinct surface forms in the released data
    ambiguous = {k: v for k, v in original.items() if len(v) > 1}
    assert len(ambiguous) == 2
    assert set(ambiguous["{A} is to the right and above {B} at an angle of about 45 degrees."]) == {
        "upper-right", "lower-right", "upper-left"}
    assert literal["{A} is to the right and above {B} at an angle of about 45 degrees."] == ("upper-right",)
    assert literal["{A} and {B} are parallel, and {A} is to the right of {B}."] == ("right",)
    assert original["{A} and {B} are parallel, and {A} is to the right of {B}."] == ("left",)


def test_sentence_key_and_labels():
    assert sentence_key("T and K are parallel, and T is to the right of K.") == (
        "{A} and {B} are parallel, and {A} is to the right of {B}.", ["T", "K"])
    assert sentence_key("If I is the center of a clock face, A is located between 2 and 3.")[1] == ["I", "A"]
    assert label_of(0, 0) == "overlap" and label_of(-3, 2) == "upper-left" and label_of(1, 0) == "right"
    assert all(INVERSE[INVERSE[r]] == r for r in RELATIONS)


@pytest.mark.skipif(not DATA.is_dir(), reason="released StepGame data not present")
def test_inventory_matches_released_one_hop_data():
    files = {str(DATA / "clean" / f"qa1_{split}.json"): read_json(DATA / "clean" / f"qa1_{split}.json")
             for split in ("train", "valid")}
    found = recover_from_data(files)
    original = reading_table("original")
    assert set(found) == set(original)
    for key, info in found.items():
        assert set(info["relations"]) == set(original[key]), key
