"""StepGame solver: sentence parsing for every template both ways, exact answers, defect explanations."""

from pathlib import Path

import pytest

from posttrain.errors import DataError
from posttrain.stepgame.formats import read_json
from posttrain.stepgame.solver import evaluate, explain, parse_question, parse_sentence, solve
from posttrain.stepgame.templates import INVERSE, RELATIONS, load_inventory

DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "stepgame"


def _holds(facts, x, y, rel):
    """Does one of the readings say x is rel of y?"""
    for f in facts:
        if (f.subject, f.object) == (x, y) and f.relation == rel:
            return True
        if (f.subject, f.object) == (y, x) and f.relation == INVERSE[rel]:
            return True
    return False


@pytest.mark.parametrize("template_set", ["original", "corrected"])
def test_every_template_parses_in_both_orientations(template_set):
    inv = load_inventory().templates(template_set)
    n = 0
    for rel in RELATIONS:
        for tpl in inv[rel]:
            for x, y in (("Q", "A"), ("A", "Q"), ("I", "Z")):
                facts = parse_sentence(tpl.render(x, y), template_set)
                assert facts, tpl
                if tpl.defect and tpl.defect["kind"] == "self-reference":
                    assert facts[0].subject == x and facts[0].object is None
                    continue
                assert _holds(facts, x, y, rel), (tpl.id, tpl.text, facts)
                n += 1
    assert n >= 3 * 213


def test_defective_templates_read_literally():
    for tpl in load_inventory().defective():
        facts = parse_sentence(tpl.render("M", "N"), "corrected")
        if tpl.defect["reads_as"] is None:
            assert facts[0].relation is None or facts[0].object is None
        else:
            assert _holds(facts, "M", "N", tpl.defect["reads_as"]), tpl.id
            assert not _holds(facts, "M", "N", tpl.relation)


def test_parse_question():
    assert parse_question("What is the relation of the agent X to the agent Y?") == ("X", "Y")
    with pytest.raises(DataError):
        parse_question("Where is X?")


def test_solve_multi_hop_overlap_and_noise():
    story = ["A is to the left of B.", "C is above B.", "D is on the lower left of C.",
             "Z is to the right of Y."]  # Z, Y: disconnected noise
    assert solve(story, "What is the relation of the agent D to the agent A?") == "overlap"
    assert solve(story, "What is the relation of the agent C to the agent A?") == "upper-right"
    assert solve(story, "What is the relation of the agent A to the agent C?") == "lower-left"
    assert solve(story, "What is the relation of the agent Z to the agent A?") is None
    assert solve(["Q is over there and P is on the left of it."],
                 "What is the relation of the agent Q to the agent P?") == "right"


def test_explain_needs_a_defective_template():
    story = ["A is to the left of B."]
    assert not explain(story, "What is the relation of the agent A to the agent B?", "right").explained
    story = ["T and K are parallel, and T is to the right of K."]
    why = explain(story, "What is the relation of the agent K to the agent T?", "right")
    assert why.explained and why.templates and why.templates[0].startswith("right-")


def test_evaluate_counts():
    exs = [{"story": ["A is to the left of B."], "question": "What is the relation of the agent A to the agent B?",
            "label": "left"},
           {"story": ["W is placed at the bottom of P."], "question": "What is the relation of the agent W to the "
            "agent P?", "label": "above"}]
    rep = evaluate(exs)
    assert rep["correct"] == 1 and rep["contradictions"] == 1 and rep["explained"] == 1
    assert rep["errors"][0]["predicted"] == "below" and rep["errors"][0]["templates"][0].startswith("below-")


@pytest.mark.skipif(not DATA.is_dir(), reason="released StepGame data not present")
@pytest.mark.parametrize("kind", ["clean", "noise"])
def test_released_valid_disagreements_all_explained(kind):
    rep = evaluate(read_json(DATA / kind / "qa1_valid.json"))
    assert rep["unparsed_sentences"] == 0
    assert rep["contradictions"] > 0
    assert rep["unexplained"] == 0, [e for e in rep["errors"] if not e["explained"]][:3]
    assert rep["accuracy"] > 0.9
