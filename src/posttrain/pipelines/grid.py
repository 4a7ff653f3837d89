"""The few-shot protocol: methods x tasks x k-shot seeds x hyper-parameter grid -> best dev cell -> test mean ± std.

LM-BFF (Gao et al., ACL 2021) and PCP (Shi & Lipani, NeurIPS 2023, README §3) evaluate a few-shot method as
follows: for each task and each of the five k-shot splits (seeds 13, 21, 42, 87, 100; 16 examples per class in
train and in dev), train once per learning rate in {1e-5, 2e-5, 5e-5}; keep the run whose 16-shot *dev* metric is
best; report its *test* metric; summarise the seeds as mean ± std. For seed s and grid point h:

    h*(s) = argmax_h dev(s, h),    table cell = mean_s test(s, h*(s)) ± std_s test(s, h*(s))

Each cell is one ``engine.train`` run in ``OUT/<method>/<task>/seed<s>/<axes>``; a cell is finished when its
``final_metrics.json`` exists, so re-running ``posttrain grid CONFIG`` resumes a partial grid. Within a run the
engine keeps the best evaluation's weights when ``train.best_metric`` is set (the grid sets it to the selection
metric when ``train.eval_steps > 0``), and the cell's dev value is then ``best_eval_<metric>``, else
``eval_<metric>``. The std is the population std (ddof 0, NumPy's default, as LM-BFF's tools/gather_result.py)
unless ``std: sample``.
"""

from __future__ import annotations

import gc
import itertools
import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Literal, Optional


from ..config import all_keys, build_dataclass, did_you_mean, help_field as _f, load_config, read_yaml_file
from ..errors import ConfigError, PosttrainError
from ..io_utils import atomic_write_json
from .grid_report import _axes_tag, _fmt, cell_state, dev_value, select, write_report
from ..engine import clear_run, last_checkpoint
from ..tasks import find_file, get_task

LM_BFF_SEEDS = [13, 21, 42, 87, 100]





@dataclass
class GridConfig:
    output_dir: str = _f("", "Grid folder OUT: cells go to OUT/<method>/<task>/seed<seed>/<axes>, tables to "
                         "OUT/grid_results.{json,md,png}.")
    recipes: dict = _f({}, "Method name -> RunConfig recipe (YAML path), or -> {recipe: PATH, overrides: [k=v, ...], "
                       "axes: {key: [values]}} for per-method overrides and a per-method grid (e.g. DePT's two lrs).")
    tasks: list = _f([], "Declared task names (`posttrain tasks list`) or task YAML files; each cell sets task.name.")
    seeds: list = _f(LM_BFF_SEEDS, "k-shot seeds; each sets every key of seed_keys (LM-BFF: data split = train seed).")
    seed_keys: list = _f(["task.seed", "train.seed"], "RunConfig keys the seed is written to.")
    axes: dict = _f({"train.learning_rate": [1e-5, 2e-5, 5e-5]},
                    "section.key -> values; the grid is their Cartesian product (PCP: lr in {1e-5, 2e-5, 5e-5}).")
    train_split: Optional[str] = _f("kshot:train", "task.train of every cell (null = keep the recipe's).")
    eval_split: Optional[str] = _f("kshot:dev", "task.eval of every cell: the dev set selection is made on.")
    test_split: Optional[str] = _f("kshot:test", "task.test of every cell: the split reported in the table.")
    select_metric: Optional[str] = _f(None, "Dev metric to select on (accuracy, mcc, f1, pearson, output_loss; "
                                      "losses are minimised); null = each task's first metric. The table reports "
                                      "the same metric on test (the task's first metric when selecting on a loss).")
    overrides: list = _f([], "section.key=value overrides applied to every cell (after the recipe).")
    task_overrides: dict = _f({}, "Task name -> overrides for that task's cells, e.g. {RTE: [data.max_length=256]}.")
    std: Literal["population", "sample"] = _f("population", "Std over seeds: population (ddof 0, as LM-BFF) or "
                                              "sample (ddof 1).")
    keep_weights: Literal["all", "selected", "none"] = _f("selected", "Weights kept once a (method, task, seed) group is finished: all, selected "
                           "(final/ of the chosen cell only; checkpoints/ removed) or none (metrics only).")
    percent: bool = _f(True, "Show metrics x100 in the Markdown table and the plot (JSON keeps raw values).")


@dataclass
class Cell:
    method: str
    task: str          # the task's declared name (dir and table label)
    seed: int
    axes: dict         # axis key -> value of this cell
    run_dir: Path
    cfg: object        # the resolved RunConfig
    dev_metric: str
    test_metric: str

    @property
    def label(self) -> str:
        return f"{self.method} {self.task} seed{self.seed} {_axes_tag(self.axes)}"


def _bad(where: str, msg: str):
    raise ConfigError(f"{where}: {msg}")


def _resolve_file(text: str, base: Path, where: str, what: str) -> Path:
    path = Path(str(text)).expanduser()
    for candidate in ([path] if path.is_absolute() else [Path.cwd() / path, base / path]):
        if candidate.is_file():
            return candidate.resolve()
    _bad(where, f"{what} file not found: {text} (looked in {Path.cwd()} and {base})")


def _product(axes: dict) -> list[dict]:
    return [dict(zip(axes, values)) for values in itertools.product(*axes.values())]


def _check_axes(axes, where: str, keys: list[str]) -> dict:
    if not isinstance(axes, dict):
        _bad(where, f"expected a mapping of section.key -> list of values, got {axes!r}")
    for key, values in axes.items():
        if key not in keys:
            _bad(f"{where}.{key}", "unknown config key" + did_you_mean(key, keys))
        if not isinstance(values, list) or not values:
            _bad(f"{where}.{key}", f"expected a non-empty list of values, got {values!r}")
    return dict(axes)


def _check_data(cfg, task, where: str, seen: set) -> None:
    for value in (cfg.task.train, cfg.task.eval, cfg.task.test):
        key = (task.name, value, cfg.task.seed, cfg.task.data_root)
        if value and key not in seen:
            source, split = value.split(":")
            try:
                found = find_file(task, source, split, root=cfg.task.data_root, seed=cfg.task.seed)
            except ConfigError as err:
                _bad(where, str(err))
            if found is None:
                _bad(where, f"{task.name} {value} (seed {cfg.task.seed}): data file not present; set "
                     "$POSTTRAIN_DATA or task.data_root")
            seen.add(key)


def read_grid(path: str | Path, extra_overrides: list[str] | None = None) -> GridConfig:
    """The grid YAML as a GridConfig, with one-line errors for unknown keys, wrong types and empty lists."""
    path = Path(path)
    raw = read_yaml_file(path, "grid")
    if not isinstance(raw, dict):
        _bad(str(path), f"expected a mapping (output_dir, recipes, tasks, seeds, axes, ...), got {type(raw).__name__}")
    defaults = GridConfig()
    # an empty 'overrides:' means none: a null list or mapping key keeps its default
    raw = {k: v for k, v in raw.items() if not (v is None and isinstance(getattr(defaults, k, None), (list, dict)))}
    grid = build_dataclass(GridConfig, raw, str(path))
    grid.overrides = [*grid.overrides, *(extra_overrides or [])]
    if not grid.output_dir:
        _bad(f"{path}: output_dir", "required: the grid's output folder, e.g. runs/grid/prompt_ft")
    for name in ("recipes", "tasks", "seeds"):
        if not getattr(grid, name):
            _bad(f"{path}: {name}", "must not be empty")
    if not all(isinstance(s, int) and not isinstance(s, bool) for s in grid.seeds):
        _bad(f"{path}: seeds", f"expected a list of integers, got {grid.seeds!r}")
    if grid.eval_split == "":
        _bad(f"{path}: eval_split", "the selection needs a dev split (e.g. kshot:dev)")
    return grid


def load_grid(path: str | Path, extra_overrides: list[str] | None = None,
              check_data: bool = True) -> tuple[GridConfig, list[Cell]]:
    """Read and validate a grid YAML; returns it with every cell's resolved RunConfig (no training). With
    check_data, every cell's train/dev/test file must exist (so a grid does not fail cell by cell)."""
    grid = read_grid(path, extra_overrides)
    where, base, keys = str(path), Path(path).resolve().parent, all_keys()
    for key in grid.seed_keys:
        if key not in keys:
            _bad(f"{where}: seed_keys", f"unknown config key {key!r}" + did_you_mean(key, keys))
    _check_axes(grid.axes, f"{where}: axes", keys)
    methods = {}
    for name, spec in grid.recipes.items():
        at = f"{where}: recipes.{name}"
        spec = {"recipe": spec} if isinstance(spec, str) else spec
        if not isinstance(spec, dict) or "recipe" not in spec or set(spec) - {"recipe", "overrides", "axes"}:
            _bad(at, "expected a recipe path or {recipe: PATH, overrides: [...], axes: {...}}")
        methods[str(name)] = (_resolve_file(spec["recipe"], base, at, "recipe"), list(spec.get("overrides") or []),
                              _check_axes(spec["axes"], f"{at}.axes", keys) if "axes" in spec else grid.axes)
    tasks = []
    for i, entry in enumerate(grid.tasks):
        at, ref = f"{where}: tasks[{i}]", str(entry)
        if ref.endswith((".yaml", ".yml")):
            ref = str(_resolve_file(ref, base, at, "task"))
        try:
            task = get_task(ref)
        except ConfigError as err:
            _bad(at, str(err))
        extra = grid.task_overrides.get(task.name, grid.task_overrides.get(str(entry), []))
        tasks.append((at, ref, task, extra))
    for name in grid.task_overrides:
        if name not in {t.name for _, _, t, _ in tasks} | {str(e) for e in grid.tasks}:
            _bad(f"{where}: task_overrides.{name}", "not one of the grid's tasks" + did_you_mean(name, grid.tasks))

    cells, seen, checked = [], {}, set()
    splits = [(k, v) for k, v in (("train", grid.train_split), ("eval", grid.eval_split), ("test", grid.test_split))
              if v is not None]
    for method, (recipe, method_overrides, axes) in methods.items():
        for at, ref, task, task_overrides in tasks:
            select = grid.select_metric or task.metrics[0]
            if select != "output_loss" and select not in task.metrics:
                _bad(f"{where}: select_metric",
                     f"{select!r} is not a metric of {task.name} ({', '.join(task.metrics)})")
            for seed, point in ((s, p) for s in grid.seeds for p in _product(axes)):
                run_dir = Path(grid.output_dir) / method / _fmt(task.name) / f"seed{seed}" / _axes_tag(point)
                if run_dir in seen:
                    _bad(where, f"cells {seen[run_dir]} and {method} {task.name} {point} share {run_dir}")
                seen[run_dir] = f"{method} {task.name} {point}"
                over = [*grid.overrides, *method_overrides, *task_overrides, f"task.name={json.dumps(ref)}",
                        *[f"{k}={seed}" for k in grid.seed_keys], *[f"task.{k}={v}" for k, v in splits],
                        *[f"{k}={json.dumps(v)}" for k, v in point.items()],
                        f"train.output_dir={json.dumps(str(run_dir))}"]
                try:
                    cfg = load_config(recipe, over)
                    if hasattr(cfg.train, "best_metric") and not cfg.train.best_metric and cfg.train.eval_steps > 0:
                        cfg = load_config(recipe, [*over, f"train.best_metric={select}"])  # LM-BFF's best checkpoint
                except ConfigError as err:
                    _bad(f"{where}: cell {method}/{task.name}/seed{seed}/{_axes_tag(point)}", str(err))
                if not cfg.task.eval:
                    _bad(f"{where}: eval_split", f"{method}'s recipe has no task.eval: selection needs a dev split")
                if check_data:
                    _check_data(cfg, task, at, checked)
                test_metric = task.metrics[0] if "loss" in select else select
                cells.append(Cell(method, task.name, seed, point, run_dir, cfg, select, test_metric))
    return grid, cells


# ---------------------------------------------------------------------------------------------------------------
# running and reporting


def _prune(cells: list[Cell], states: dict, chosen: list[dict], keep: str) -> None:
    """keep_weights: drop checkpoints/ (and final/ of the cells not selected) once a seed's group is finished."""
    picked = {row["run_dir"] for row in chosen if row["complete"]}
    complete = {(r["method"], r["task"], r["seed"]) for r in chosen if r["complete"]}
    for cell in cells:
        if states[cell.run_dir][0] == "done" and (keep == "none" or (cell.method, cell.task, cell.seed) in complete):
            shutil.rmtree(cell.run_dir / "checkpoints", ignore_errors=True)
            if keep == "none" or str(cell.run_dir) not in picked:
                shutil.rmtree(cell.run_dir / "final", ignore_errors=True)


def run_cell(cell: Cell, train_fn: Callable) -> dict:
    """Train one cell, resuming from its last checkpoint if it has one; returns its final metrics."""
    resume = last_checkpoint(cell.run_dir) is not None
    if not resume:  # a killed run without a usable checkpoint starts over
        clear_run(cell.run_dir)
    (cell.run_dir / "cell_error.json").unlink(missing_ok=True)
    final = {k: v for k, v in train_fn(cell.cfg, resume=resume).items() if k != "trainer"}
    path = cell.run_dir / "final_metrics.json"
    if not path.is_file():  # engine.train writes it; a custom train_fn may not
        atomic_write_json(path, final)
    return json.loads(path.read_text(encoding="utf-8"))


def run_grid(grid: GridConfig, cells: list[Cell], *, train_fn: Callable | None = None, fail_fast: bool = False,
             log: Callable = print) -> dict:
    """Train every unfinished cell (a failure is recorded and the grid goes on, unless fail_fast); write the report.
    ``train_fn(cfg, resume=...)`` defaults to ``engine.train``."""
    if train_fn is None:
        from ..engine import train as train_fn
    states = {c.run_dir: cell_state(c) for c in cells}
    todo = [c for c in cells if states[c.run_dir][0] != "done"]
    log(f"grid {grid.output_dir}: {len(cells)} cells, {len(cells) - len(todo)} done, {len(todo)} to run")
    if grid.keep_weights != "all":  # a run killed after its last cell finished, before pruning: prune now
        _prune(cells, states, select(cells, states, grid.std)[0], grid.keep_weights)
    start = time.time()
    for i, cell in enumerate(todo, 1):
        eta = f", ETA {(time.time() - start) / (i - 1) * (len(todo) - i + 1) / 60:.1f} min" if i > 1 else ""
        log(f"[{i}/{len(todo)}] {cell.label}: {states[cell.run_dir][0]} -> running{eta}")
        t0 = time.time()
        try:
            metrics = run_cell(cell, train_fn)
            states[cell.run_dir] = ("done", metrics)
            key, value = dev_value(metrics, cell.dev_metric)
            log(f"[{i}/{len(todo)}] {cell.label}: done in {time.time() - t0:.0f} s, {key}={value}, "
                f"test_{cell.test_metric}={metrics.get(f'test_{cell.test_metric}')}")
        except Exception as err:  # noqa: BLE001 - a failed cell is recorded, the grid goes on
            message = f"{type(err).__name__}: {(str(err).strip().splitlines() or [''])[0]}"
            atomic_write_json(cell.run_dir / "cell_error.json", {"error": message})
            states[cell.run_dir] = ("failed", {"error": message})
            log(f"[{i}/{len(todo)}] {cell.label}: FAILED ({message})")
            if fail_fast:
                raise PosttrainError(f"{cell.label}: {message} (--fail-fast)") from err
        finally:
            gc.collect()
        if grid.keep_weights != "all":
            _prune(cells, states, select(cells, states, grid.std)[0], grid.keep_weights)
    return write_report(grid, cells, states)
