"""plots: atomic PNG writes whose temporaries a resumed run removes, and the finished-run marker written last."""

import json

import pytest

from posttrain.io_utils import remove_stale_temp_files
from posttrain.plots import plot_loss_curves, save_png


def _metrics(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in [{"step": 1, "loss": 2.0}, {"step": 2, "loss": 1.5},
                                                         {"step": 2, "eval_output_loss": 1.7}]) + "\n")
    return path


def test_loss_curve_is_a_png_and_leaves_no_temporary(tmp_path):
    out = plot_loss_curves(_metrics(tmp_path), tmp_path / "loss_curve.png")
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["loss_curve.png", "metrics.jsonl"]


def test_a_write_killed_mid_savefig_leaves_a_temporary_the_resume_cleaner_removes(tmp_path, monkeypatch):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, _ = plt.subplots()
    seen = []

    def killed(self, path, **kwargs):
        open(path, "wb").write(b"\x89PNG half")
        seen.append(path)
        raise KeyboardInterrupt  # stands in for SIGKILL: the finally still runs, so look at what it would leave

    monkeypatch.setattr(type(fig), "savefig", killed)
    with pytest.raises(KeyboardInterrupt):
        save_png(fig, tmp_path / "loss_curve.png")
    assert not (tmp_path / "loss_curve.png").exists() and not seen[0].exists()
    # A real SIGKILL skips the finally: the file it leaves is one remove_stale_temp_files takes.
    seen[0].write_bytes(b"\x89PNG half")
    assert remove_stale_temp_files(tmp_path) == [seen[0]]


def test_finish_writes_the_plot_before_the_finished_marker(tmp_path, monkeypatch):
    from posttrain import callbacks

    order = []
    monkeypatch.setattr(callbacks, "plot_loss_curves", lambda *a, **k: order.append("plot"))
    monkeypatch.setattr(callbacks, "atomic_write_json", lambda path, data: order.append(path.name))
    logger = callbacks.MetricsCallback.__new__(callbacks.MetricsCallback)
    logger.run_dir, logger.path = tmp_path, _metrics(tmp_path)
    logger.finish({"eval_accuracy": 1.0})
    assert order == ["plot", "final_metrics.json"]
