"""tasks.readers: fixture files (copied real rows), bad input with exact file:line messages, the real shared data."""

import json
from pathlib import Path

import pytest

from posttrain.errors import ConfigError, DataError
from posttrain.tasks import (
    default_data_root, find_file, get_task, load_task_file, read_kshot, read_pool, read_split, read_superglue,
)

FIXTURES = Path(__file__).parent / "fixtures" / "tasks"
FIX = FIXTURES / "data"
DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data"
SEEDS = [13, 21, 42, 87, 100]


def test_kshot_tsv_rows():
    rows = read_kshot("SST-2", 13, "train", root=FIX)
    assert rows == [
        {"text_a": "nothing happens , and it happens to flat characters .", "text_b": None, "label": "0", "idx": 0},
        {"text_a": "(ramsay) visually transforms the dreary expanse of dead-end distaste the characters inhabit into "
                   "a poem of art , music and metaphor .", "text_b": None, "label": "1", "idx": 1},
        {"text_a": "the film jolts the laughs from the audience -- as if by cattle prod .", "text_b": None,
         "label": "1", "idx": 2},
    ]
    assert [r["label"] for r in read_kshot("sst2", 21, "test", root=FIX)] == ["0", "0"]  # one test file, any seed
    assert find_file("SST-2", "kshot", "test", root=FIX, seed=13) == FIX / "lm_bff_kshot" / "SST-2" / "test.tsv"
    # upstream layout: the test file inside the seed folder
    trec = read_kshot("trec", 13, "test", root=FIX)
    assert trec == [{"text_a": "How far is it from Denver to Aspen ?", "text_b": None, "label": "5", "idx": 0},
                    {"text_a": "What county is Modesto , California in ?", "text_b": None, "label": "4", "idx": 1}]


def test_kshot_quirks_bom_quotes_ragged_rows_no_header():
    mrpc = read_kshot("MRPC", 13, "train", root=FIX)  # BOM before "Quality"; a sentence starting with a quote
    assert mrpc[0]["label"] == "1"
    assert mrpc[0]["text_b"] == '" The foodservice pie business does not fit our long-term growth strategy .'
    assert mrpc[1]["text_b"].startswith('His wife said he was " 100 percent behind George Bush " ')
    snli = read_kshot("SNLI", 13, "train", root=FIX)  # an 11-field and a 15-field row under an 11-field header
    assert [(r["text_a"][:24], r["text_b"], r["label"]) for r in snli] == [
        ("A man sitting on top of ", "A man is sitting on an structure in progress.", "entailment"),
        ("The girl sitting by a ro", "a girl wears black", "entailment")]
    cola = read_kshot("CoLA", 13, "train", root=FIX)
    assert [(r["text_a"], r["label"]) for r in cola] == [
        ("Bill seems to be obnoxious, but I don't think that Sam tends.", "0"), ("The ball lies in the box.", "1")]
    sts = read_kshot("STS-B", 13, "train", root=FIX)
    assert sts[0] == {"text_a": "sheep standing in afield.", "text_b": "A sheep grazing in a field.", "label": 3.2,
                      "idx": 0}
    assert sts[1]["label"] == 3.875
    subj = read_kshot("subj", 13, "test", root=FIX)  # CSV with "" escapes
    assert subj[1] == {"text_a": 'the best part about " gangs " was daniel day-lewis .', "text_b": None,
                       "label": "0", "idx": 1}
    assert ' " chicago " in 2002 .' in subj[0]["text_a"] and subj[2]["label"] == "1"


def test_pool_and_superglue_rows():
    pool = read_pool("SST-2", "dev", root=FIX)
    assert [r["idx"] for r in pool] == [0, 1, 2] and all(r["text_b"] is None for r in pool)
    assert pool[1]["text_a"].startswith("... a quietly introspective portrait") and pool[1]["label"] == "1"
    assert [r["label"] for r in read_pool("STS-B", "dev", root=FIX)] == [4.4, 3.8]
    assert [r["label"] for r in read_pool("sst-5", "dev", root=FIX)] == ["3", "4"]  # ints in the file
    wic = read_superglue("WiC", "train", root=FIX)
    assert wic[0] == {"text_a": "You make me feel naked.", "text_b": "She felt small and insignificant.",
                      "word": "feel", "label": "True", "idx": 4232}
    unlabeled = read_superglue("wic", "unlabeled", root=FIX)
    assert unlabeled[0]["label"] is None and unlabeled[0]["word"] == "carry"
    boolq = read_superglue("boolq", "val", root=FIX)[0]
    assert boolq["label"] == "False" and boolq["text_b"] == "does ethanol take more energy make that produces"
    assert [r["label"] for r in read_superglue("CB", "train", root=FIX)] == ["entailment", "entailment"]


def test_user_task_csv_keeps_na_and_null_as_text():
    task = load_task_file(FIXTURES / "user" / "reviews.yaml")
    rows = read_split(task, "files", "train")  # dir 'data' is relative to the YAML file
    assert rows == [
        {"text_a": 'She said "great", then left', "text_b": None, "label": "pos", "idx": 7},
        {"text_a": "NA", "text_b": None, "label": "neg", "idx": 8},
        {"text_a": "null", "text_b": None, "label": "pos", "idx": 9},
        {"text_a": "two\nlines", "text_b": None, "label": "neg", "idx": 10},
    ]


def test_missing_files_and_bad_arguments(tmp_path):
    path = tmp_path / "lm_bff_kshot" / "mr" / "16-13" / "train.csv"
    with pytest.raises(DataError) as info:
        read_kshot("MR", 13, "train", root=tmp_path)
    assert str(info.value) == (
        f"{path}: MR kshot train file is not present; MR, CR and MPQA are withheld from the shared data; generate "
        "the LM-BFF k-shot folder (princeton-nlp/LM-BFF tools/generate_k_shot_data.py, seeds 13 21 42 87 100) and "
        "put it here; set $POSTTRAIN_DATA or pass root= to read another data root")
    with pytest.raises(DataError, match=r"MNLI-mm kshot test file is not present \(nor .*16-42/test_mismatched.tsv\)"):
        read_kshot("mnli-mm", 42, "test", root=tmp_path)
    with pytest.raises(ConfigError, match=r"seed 7 is not one of 13, 21, 42, 87, 100"):
        read_kshot("SST-2", 7, "train", root=FIX)
    with pytest.raises(ConfigError, match=r"task 'SST-2' declares no 'superglue' data \(it has: kshot, pool\)"):
        read_superglue("SST-2", "train", root=FIX)
    with pytest.raises(ConfigError, match=r"task 'SST-2': pool has no split 'test' \(splits: train, dev\)"):
        read_pool("SST-2", "test", root=FIX)
    assert find_file("MR", "pool", "dev", root=FIX) is None


def test_data_root_from_env(monkeypatch, tmp_path):
    monkeypatch.setenv("POSTTRAIN_DATA", str(tmp_path))
    assert default_data_root() == tmp_path
    with pytest.raises(DataError, match=rf"^{tmp_path}/lm_bff_kshot/SST-2/16-13/train.tsv: SST-2 kshot train file"):
        read_kshot("SST-2", 13, "train")
    monkeypatch.delenv("POSTTRAIN_DATA")
    assert default_data_root().parts[-2:] == ("shared", "data")


def _kshot(root, task, text: bytes, name="train", seed=13):
    ext = "csv" if get_task(task).data["kshot"].format == "csv" else "tsv"
    path = root / "lm_bff_kshot" / get_task(task).data["kshot"].dir.split("/")[-1] / f"16-{seed}" / f"{name}.{ext}"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(text)
    return path


@pytest.mark.parametrize("task, text, message", [
    ("SST-2", b"sentence\tlabel\nok .\t0\nbad .\t2\n", ":3: unknown label \"2\" in 'label'; expected one of 0, 1"),
    ("SST-2", b"text\tlabel\nok .\t0\n", ":1: no column 'sentence' in the header (columns: text, label)"),
    ("SST-2", b"", ":1: empty file; expected rows"),
    ("SST-2", b"sentence\tlabel\n", ":2: no data rows after the header"),
    ("SST-2", b"sentence\tlabel\nok\t0\n\xff bad\t1\n", ":3: not valid UTF-8 (byte 20)"),
    ("SST-2", b"sentence\tlabel\nok\t0\textra\n",
     ":2: 3 tab-separated fields but the header has 2; declare the columns by position"),
    ("CoLA", b"src\t1\t\tGood.\nsrc\t1\n", ":2: expected at least 4 tab-separated fields (for text_a), got 2"),
    ("STS-B", b"i\tg\tf\ty\to\ts1\ts2\tsentence1\tsentence2\tscore\n0\tg\tf\ty\to\tn\tn\tA\tB\tabc\n",
     ":2: label ('score') \"abc\" is not a number; expected a score in [0, 5]"),
    ("STS-B", b"i\tg\tf\ty\to\ts1\ts2\tsentence1\tsentence2\tscore\n0\tg\tf\ty\to\tn\tn\tA\tB\t5.5\n",
     ":2: label ('score') 5.5 is outside [0, 5]"),
    ("subj", b"0,fine\n\n7,bad\n", ":3: unknown label \"7\" in '0'; expected one of 0, 1"),
])
def test_bad_tsv_csv(tmp_path, task, text, message):
    path = _kshot(tmp_path, task, text)
    with pytest.raises(DataError) as info:
        read_kshot(task, 13, "train", root=tmp_path)
    assert str(info.value) == f"{path}{message}"


def _pool(root, rows_or_text):
    path = root / "pcp_unlabeled" / "SST-2" / "train.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    text = rows_or_text if isinstance(rows_or_text, str) else json.dumps(rows_or_text, indent=4)
    path.write_text(text)
    return path


@pytest.mark.parametrize("content, message", [
    ({"0": {"text_a": "a", "text_b": None, "label": "1"}, "1": {"text_a": "b", "text_b": None, "label": 7}},
     ":7: unknown label 7 in 'label'; expected one of 0, 1"),
    ({"0": {"text_a": None, "text_b": None, "label": "1"}}, ":2: text_a ('text_a') is null; expected a string"),
    ({"0": {"text_a": "a", "text_b": None}}, ":2: no key 'label' (for label); keys: text_a, text_b"),
    ('{\n    "0": {"text_a": "a",}\n}', ":2: malformed JSON (Expecting property name enclosed in double quotes at "
                                       "column 25)"),
    ("[1, 2]", ": row 0: expected a row object, got int"),
    ("{}", ":1: no rows"),
])
def test_bad_pool_json(tmp_path, content, message):
    path = _pool(tmp_path, content)
    with pytest.raises(DataError) as info:
        read_pool("SST-2", "train", root=tmp_path)
    assert str(info.value) == f"{path}{message}"


def test_bad_superglue_jsonl(tmp_path):
    path = tmp_path / "superglue" / "CB" / "train.jsonl"
    path.parent.mkdir(parents=True)
    row = {"premise": "p", "hypothesis": "h", "label": "entailment", "idx": 0}
    path.write_text(json.dumps(row) + "\n\n" + json.dumps({**row, "label": "maybe"}) + "\n")
    with pytest.raises(DataError) as info:
        read_superglue("CB", "train", root=tmp_path)
    assert str(info.value) == f"{path}:3: unknown label \"maybe\" in 'label'; expected one of contradiction, " \
                              "entailment, neutral"
    path.write_text(json.dumps(row) + "\n{oops\n")
    with pytest.raises(DataError, match=rf"^{path}:2: malformed JSON"):
        read_superglue("CB", "train", root=tmp_path)
    path.write_text("")
    with pytest.raises(DataError, match=rf"^{path}:1: empty file"):
        read_superglue("CB", "train", root=tmp_path)
    path.write_text(json.dumps({**row, "premise": 3}) + "\n")
    with pytest.raises(DataError, match=rf"^{path}:1: text_a \('premise'\) is 3; expected a string$"):
        read_superglue("CB", "train", root=tmp_path)


# ---------------------------------------------------------------------------------------------------------------
# the real shared data (../shared/data next to the checkout; CI on a clean checkout skips these)

needs_data = pytest.mark.skipif(not (DATA / "lm_bff_kshot").is_dir(), reason="../shared/data not present")

KSHOT = {  # task: (train = dev rows per seed, test rows or None when the test file is withheld)
    "SST-2": (32, 872), "SST-5": (80, 2210), "Subj": (32, 2000), "TREC": (96, 500), "CoLA": (32, 1043),
    "MRPC": (32, 408), "QQP": (32, None), "STS-B": (32, 1500), "MNLI": (48, None), "MNLI-mm": (48, None),
    "SNLI": (48, None), "QNLI": (32, 5463), "RTE": (32, 277),
}
POOL = {"SST-2": (6227, 692), "SST-5": (7689, 855), "Subj": (7200, 800), "TREC": (4906, 546),
        "CoLA": (7695, 856), "MNLI": (8999, 1000), "MNLI-mm": (8999, 1000), "SNLI": (8999, 1000),
        "QNLI": (8999, 1000), "QQP": (8999, 1000), "MRPC": (3300, 367), "RTE": (2240, 249), "STS-B": (5173, 575)}
SUPERGLUE = {"BoolQ": {"train": 32, "dev32": 32, "val": 3270}, "CB": {"train": 32, "dev32": 32, "val": 56},
             "SuperGLUE-RTE": {"train": 32, "dev32": 32, "val": 277},
             "WiC": {"train": 32, "dev32": 32, "val": 638, "unlabeled": 5428}}


@needs_data
@pytest.mark.parametrize("name", sorted(KSHOT))
def test_real_kshot_counts(name):
    train_dev, test = KSHOT[name]
    task = get_task(name)
    for seed in SEEDS:
        for split in ("train", "dev"):
            rows = read_kshot(task, seed, split, root=DATA)
            assert len(rows) == train_dev, (seed, split)
            if not task.is_regression:  # LM-BFF: 16 examples per class
                assert sorted({r["label"] for r in rows}) == sorted(task.labels)
                assert all(sum(r["label"] == lab for r in rows) == 16 for lab in task.labels)
    if test is None:
        with pytest.raises(DataError, match="is not present"):
            read_kshot(task, 13, "test", root=DATA)
    else:
        rows = read_kshot(task, 13, "test", root=DATA)
        assert len(rows) == test
        assert all(isinstance(r["text_a"], str) and r["text_a"] for r in rows)


@needs_data
def test_real_pools_superglue_and_withheld():
    for name, (train, dev) in POOL.items():
        assert (len(read_pool(name, "train", root=DATA)), len(read_pool(name, "dev", root=DATA))) == (train, dev)
    for name, splits in SUPERGLUE.items():
        assert {split: len(read_superglue(name, split, root=DATA)) for split in splits} == splits
    for name in ("MR", "CR", "MPQA"):
        with pytest.raises(DataError, match="withheld from the shared data"):
            read_kshot(name, 13, "train", root=DATA)
        with pytest.raises(DataError, match="pools are withheld"):
            read_pool(name, "train", root=DATA)
    sts = read_kshot("STS-B", 13, "test", root=DATA)
    assert all(0.0 <= r["label"] <= 5.0 for r in sts)
    # the first MRPC test pair keeps its leading quote (quoting off, as GLUE's _read_tsv)
    assert read_kshot("MRPC", 13, "test", root=DATA)[0]["text_b"].startswith('" The foodservice')
