"""StepGame: generator, template inventory, exact solver and file formats.

Shi, Zhang, Lipani. "StepGame: A New Benchmark for Robust Multi-Hop Spatial Reasoning in Texts", AAAI 2022
(arXiv 2204.08292). Spec: methods-reference §6. Stories are k-hop walks on a grid told with crowd-sourced
paraphrase templates; the question asks the relation (8 directions or overlap) of two entities.
"""

from .formats import read_babi, read_examples, read_json, read_jsonl, write_examples
from .generator import generate, iter_pairs
from .solver import evaluate, explain, parse_question, parse_sentence, parse_story, solve
from .templates import INVERSE, LABELS, OFFSET, RELATIONS, label_of, load_inventory, reading_table, sentence_key

__all__ = [
    "INVERSE", "LABELS", "OFFSET", "RELATIONS", "evaluate", "explain", "generate", "iter_pairs", "label_of",
    "load_inventory", "parse_question", "parse_sentence", "parse_story", "read_babi", "read_examples", "read_json",
    "read_jsonl", "reading_table", "sentence_key", "solve", "write_examples",
]
