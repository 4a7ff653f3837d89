"""scoring/sharding.py and the scorers that use it: with P processes each scores its share of the batches, all
run the same number of forward passes, and the summed result equals one process scoring everything."""

import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch

from posttrain.scoring import sharding

SCRIPT = textwrap.dedent('''
    import json, sys
    import torch
    import torch.nn.functional as F
    from posttrain.methods.objectives import LabelScorer

    def toy_scorer(calls):
        torch.manual_seed(0)
        model = torch.nn.Linear(4, 3)
        rows = [{"input_ids": list(range(1 + i % 4)), "x": torch.randn(4).tolist(), "label": i % 3} for i in range(5)]
        collate = lambda rows: {"x": torch.tensor([r["x"] for r in rows]), "label": torch.tensor([r["label"] for r in rows])}
        task = type("Task", (), {"labels": ["a", "b", "c"], "regression": None, "metrics": ["accuracy"]})()

        def scores(m, batch):
            calls.append(len(batch["x"]))
            return m(batch["x"])

        loss_of = lambda s, batch: F.cross_entropy(s, batch["label"], reduction="none")
        return model, LabelScorer(task, rows, ["a", "b", "c", "a", "b"], 2, collate, scores, loss_of)

    if __name__ == "__main__":
        torch.distributed.init_process_group("gloo")
        calls = []
        model, scorer = toy_scorer(calls)
        logp, losses = scorer.scores_and_losses(model)
        metrics = scorer(model)
        rank = torch.distributed.get_rank()
        with open(f"{sys.argv[1]}/rank{rank}.json", "w") as f:
            json.dump({"logp": logp.tolist(), "losses": losses.tolist(), "calls": len(calls), "metrics": metrics}, f)
        torch.distributed.destroy_process_group()
''')


@pytest.mark.parametrize("n_batches, size, expected", [
    (5, 2, [[0, 2, 4], [1, 3, None]]),
    (1, 3, [[0], [None], [None]]),  # fewer batches than processes: the others repeat batch 0
    (4, 1, [[0, 1, 2, 3]]),
    (0, 2, [[], []]),
])
def test_every_process_runs_the_same_number_of_batches_and_each_batch_runs_once(monkeypatch, n_batches, size,
                                                                                expected):
    got = []
    for rank in range(size):
        monkeypatch.setattr(sharding, "process_group", lambda rank=rank: (rank, size))
        got.append(sharding.my_batches(n_batches))
    assert got == expected


@pytest.mark.skipif(not torch.distributed.is_available() or not torch.distributed.is_gloo_available(),
                    reason="torch.distributed with gloo is not available")
def test_two_processes_score_like_one(tmp_path):
    (tmp_path / "score.py").write_text(SCRIPT)
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                           str(tmp_path / "score.py"), str(tmp_path)], env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]

    sys.path.insert(0, str(tmp_path))
    try:
        import score
    finally:
        sys.path.remove(str(tmp_path))
    calls = []
    model, scorer = score.toy_scorer(calls)
    logp, losses = scorer.scores_and_losses(model)
    assert len(calls) == 3  # one process: 5 rows in batches of 2
    for got in ranks:
        assert got["calls"] == 2 * 2  # 2 of the 3 batches each (one a repeat), in two passes (scores, __call__)
        assert torch.allclose(torch.tensor(got["logp"]), logp, atol=1e-6)
        assert torch.allclose(torch.tensor(got["losses"]), losses, atol=1e-6)
        assert got["metrics"] == pytest.approx(scorer(model))
    assert scorer(model)["output_loss"] == pytest.approx(losses.double().mean().item())
