"""The paper's tables as experiments: named rows of ``TrainConfig`` overrides, run, resumed, summarised.

``configs/experiments.yaml`` holds the tables (Table II: positives sweep;
Table III: one component disabled; Table V: components added one by one),
each row with the paper's numbers. ``run_experiment`` trains every row over
the dataset's folds into ``<output>/<row>/``, keeps finished folds when run
again, and writes ``summary.csv`` / ``summary.md`` with our numbers beside
the paper's (``kdefect.experiment_summary``).

Example:
>>> sorted(load_experiments())
['add-one', 'disable-one', 'positives']
>>> [row.overrides["epochs"] for row in get_experiment("table2").rows]
[35, 40, 50, 70, 90, 150]
"""

import dataclasses
import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from kdefect.config import CONFIG_DIR, _check_types, load_config
from kdefect.errors import InputError

EXPERIMENTS_FILE = CONFIG_DIR / "experiments.yaml"
IGNORED_ON_RESUME = ("data_dir", "in_memory", "strategy")  # where data is read / runs: same result


@dataclass(frozen=True)
class Row:
    """One row of a table: ``overrides`` of the base ``TrainConfig`` and the paper's numbers.

    ``paper`` maps a column (``ksdd``, ``dagm``, ``severstal`` or another
    method) to ``{"ap": percent, "fp": n, "fn": n}`` (keys the paper gives).

    Example:
    >>> Row("db", "DB", {"dyn_balance": True}).overrides
    {'dyn_balance': True}
    """

    name: str
    label: str
    overrides: dict
    paper: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Experiment:
    """A table of the paper: ``rows`` plus the names of its paper ``columns``.

    Example:
    >>> get_experiment("disable-one").table
    'III'
    """

    name: str
    table: str
    title: str
    columns: dict
    rows: tuple
    aliases: tuple = ()

    def row(self, name):
        """The row called ``name`` (``InputError`` otherwise).

        Example:
        >>> get_experiment("add-one").row("db").overrides["grad_adjust"]
        False
        """
        for row in self.rows:
            if row.name == name:
                return row
        raise InputError(f"experiment {self.name!r} has no row {name!r}; rows: {', '.join(self.row_names())}")

    def row_names(self):
        """The rows' names in table order.

        Example:
        >>> get_experiment("positives").row_names()[:2]
        ['n33', 'n25']
        """
        return [row.name for row in self.rows]


def load_experiments(path=None):
    """All experiments of a YAML file (default ``configs/experiments.yaml``) by name.

    Row overrides are checked like a config file (known keys, right types).

    Example:
    >>> load_experiments()["add-one"].row_names()
    ['nothing', 'db', 'db-ga', 'db-ga-fs', 'all']
    """
    path = Path(path or EXPERIMENTS_FILE)
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError) as err:
        raise InputError(f"cannot read experiments {path}: {err}") from None
    experiments = {}
    for name, spec in data.items():
        rows = []
        for item in spec.get("rows", []):
            _check_types(item.get("overrides", {}), f"{path}: {name}/{item.get('name')}")
            rows.append(Row(str(item["name"]), item.get("label", item["name"]), dict(item.get("overrides", {})),
                            dict(item.get("paper", {}))))
        experiments[name] = Experiment(name, str(spec.get("table", "")), spec.get("title", name),
                                       dict(spec.get("columns", {})), tuple(rows), tuple(spec.get("aliases", ())))
    return experiments


def get_experiment(name, path=None):
    """One experiment by name or alias (``table2``, ``table3``, ``table5``).

    Example:
    >>> get_experiment("table3").name
    'disable-one'
    """
    experiments = load_experiments(path)
    for experiment in experiments.values():
        if name == experiment.name or name in experiment.aliases:
            return experiment
    names = [n for e in experiments.values() for n in (e.name, *e.aliases)]
    raise InputError(f"unknown experiment {name!r}; expected one of {', '.join(names)}")


def protocol_folds(config):
    """Every fold of the dataset's protocol (KSDD: 0, 1, 2; one-fold datasets: 0).

    Example:
    >>> from kdefect.config import TrainConfig
    >>> protocol_folds(TrainConfig(dataset="ksdd", fold=1)), protocol_folds(TrainConfig())
    ([0, 1, 2], [0])
    """
    from kdefect.training import folds_of

    return folds_of(dataclasses.replace(config, fold=None))


def scaled_epochs(epochs, epochs_max=None, epochs_scale=None):
    """The epochs a row trains: ``epochs`` times ``epochs_scale`` (at least 1), capped at ``epochs_max``.

    Example:
    >>> scaled_epochs(150, epochs_scale=0.1), scaled_epochs(35, epochs_max=2), scaled_epochs(35)
    (15, 2, 35)
    """
    if epochs_scale is not None:
        if epochs_scale <= 0:
            raise InputError(f"epochs scale must be positive, got {epochs_scale!r}")
        epochs = max(1, int(round(epochs * epochs_scale)))
    if epochs_max is not None:
        if epochs_max < 1:
            raise InputError(f"epochs max must be >= 1, got {epochs_max!r}")
        epochs = min(epochs, int(epochs_max))
    return epochs


@dataclass(frozen=True)
class PlannedRow:
    """A row ready to run: its ``config`` (all folds), the paper's ``reference`` config and ``folds``."""

    row: Row
    config: object
    reference: object
    folds: tuple


def plan_experiment(experiment, base_config, folds=None, scale=None, input_size=None, epochs_max=None,
                    epochs_scale=None, only=None):
    """The ``PlannedRow``s of ``experiment`` on ``base_config``, reduced as asked.

    ``reference`` is the dataset's configuration (``configs/<dataset>.yaml``)
    with the row's overrides: what the paper ran.

    Example:
    >>> plan = plan_experiment(get_experiment("positives"), load_config("ksdd"), folds=[0], scale=0.25,
    ...                        epochs_max=2, only=["n5"])
    >>> [(p.row.name, p.config.epochs, p.reference.epochs, p.folds) for p in plan]
    [('n5', 2, 150, (0,))]
    """
    protocol = protocol_folds(base_config)
    folds = tuple(protocol if folds is None else (int(k) for k in folds))
    if not folds or any(k not in protocol for k in folds) or len(set(folds)) != len(folds):
        raise InputError(f"folds {', '.join(map(str, folds)) or '(none)'}: expected distinct folds of "
                         f"{base_config.dataset} ({', '.join(map(str, protocol))})")
    base = base_config.replace(input_size=input_size)
    if scale is not None and input_size is None:  # a scale asked for wins over the base's own input size
        base = dataclasses.replace(base, input_size=None, scale=scale)
    reference_base = load_config(base_config.dataset)
    rows = experiment.rows if only is None else [experiment.row(name) for name in dict.fromkeys(only)]
    planned = []
    for row in rows:
        config = dataclasses.replace(base.replace(**row.overrides), fold=None)
        config = config.replace(epochs=scaled_epochs(config.epochs, epochs_max, epochs_scale))
        input_size_of(config)  # a bad scale fails here, before anything trains
        planned.append(PlannedRow(row, config, reference_base.replace(**row.overrides), folds))
    return planned


def input_size_of(config):
    """The (H, W) a configuration trains at: ``input_size``, else the dataset's reference size times ``scale``.

    Example:
    >>> input_size_of(load_config("ksdd", scale=0.25)), input_size_of(load_config("synthetic"))
    ((352, 128), (128, 128))
    """
    if config.input_size is not None:
        return tuple(config.input_size)
    if config.dataset == "synthetic":
        return (128, 128)
    import importlib

    from kdefect.data.records import resolve_input_size

    module = importlib.import_module(f"kdefect.data.loaders.{config.dataset}")
    return resolve_input_size(config, module.REFERENCE_SIZE)


def _fold_dir(row_dir, fold, planned):
    return row_dir / f"fold_{fold}" if len(protocol_folds(planned.config)) > 1 else row_dir


def settings_changed(fold_dir, config):
    """Settings of ``config`` that differ from the run stored in ``fold_dir`` (``config.yaml``).

    Where the data is read from and the run's devices (``data_dir``,
    ``in_memory``, ``strategy``) do not count; a key the stored file lacks
    (added to ``TrainConfig`` since) counts as its default.
    Returns ``[(key, stored, wanted), ...]``, empty when they agree or nothing is stored.

    Example:
    >>> from kdefect.config import TrainConfig
    >>> settings_changed("/nonexistent", TrainConfig())
    []
    """
    path = Path(fold_dir) / "config.yaml"
    if not path.exists():
        return []
    defaults = yaml.safe_load(yaml.safe_dump(type(config)().to_dict()))
    stored = {**defaults, **(yaml.safe_load(path.read_text()) or {})}  # keys added since then: their defaults
    wanted = yaml.safe_load(yaml.safe_dump(config.to_dict()))
    return [(k, stored.get(k), wanted[k]) for k in sorted(wanted)
            if k not in IGNORED_ON_RESUME and stored.get(k) != wanted[k]]


def finished_fold(fold_dir, config, strict=True):
    """The metrics of a fold finished earlier with ``config`` in ``fold_dir``, or None.

    Finished means ``metrics.json`` is written and the run is marked done
    (``kdefect.training.run_status``). A finished fold trained with other
    settings raises ``InputError`` when ``strict`` (else counts as not run).

    Example:
    >>> from kdefect.config import TrainConfig
    >>> finished_fold(Path("/nonexistent"), TrainConfig()) is None
    True
    """
    from kdefect.training import run_status

    fold_dir = Path(fold_dir)
    if run_status(fold_dir) != "complete":
        return None
    changed = settings_changed(fold_dir, config)
    if changed:
        if not strict:
            return None
        diff = ", ".join(f"{k} {old!r} (now {new!r})" for k, old, new in changed)
        raise InputError(f"{fold_dir} was trained with other settings: {diff}; "
                         "use another --output or delete that folder")
    return json.loads((fold_dir / "metrics.json").read_text())


def _collect(planned, row_dir, strict):
    """Per-fold metrics of a row already finished (None for folds not finished)."""
    return [finished_fold(_fold_dir(row_dir, k, planned), planned.config.replace(fold=k), strict)
            for k in planned.folds]


def _run_row(planned, row_dir, verbose, figures, log):
    """Train the row's unfinished folds (an interrupted one continues from its checkpoint).

    Returns ``(fold metrics, status)``; a diverged fold ends the row with no metrics.
    """
    import keras

    from kdefect.errors import TrainingDiverged
    from kdefect.training import run_status, train

    results, status = _collect(planned, row_dir, strict=True), "resumed"
    for i, fold in enumerate(planned.folds):
        if results[i] is not None:
            log(f"{planned.row.name}, fold {fold}: finished earlier, keeping it")
            continue
        config, fold_dir = planned.config.replace(fold=fold), _fold_dir(row_dir, fold, planned)
        resume = run_status(fold_dir) == "interrupted" and not settings_changed(fold_dir, config)
        log(f"{planned.row.name}, fold {fold}: {'continuing' if resume else 'training'} {config.epochs} epoch{'s' * (config.epochs != 1)} "
            f"at {'x'.join(map(str, input_size_of(config)))}")
        keras.backend.clear_session()
        try:
            results[i] = train(config, output=fold_dir, overwrite=not resume, resume=resume, verbose=verbose,
                               figures=figures, log=log)
        except TrainingDiverged as err:
            log(f"{planned.row.name}, fold {fold}: {err}")
            return None, f"diverged (fold {fold})"
        status = "trained"
    return results, status


def _join_row(planned, row_dir, fold_metrics):
    """One metrics dict for the row (folds joined); written to the row folder when it has fold folders."""
    from kdefect.evaluation import write_json
    from kdefect.metrics import join_folds

    if len(protocol_folds(planned.config)) == 1:
        return fold_metrics[0]
    joined = join_folds(fold_metrics)
    joined.update(folds_run=list(planned.folds), config=planned.config.to_dict(),
                  wall_time_seconds=sum(m.get("wall_time_seconds", 0) for m in fold_metrics))
    write_json(row_dir / "metrics.json", joined)
    (row_dir / "config.yaml").write_text(yaml.safe_dump(planned.config.to_dict(), sort_keys=False))
    return joined


def run_experiment(name, base_config, output_dir, folds=None, scale=None, input_size=None, epochs_max=None,
                   epochs_scale=None, only=None, figures=False, verbose=0, log=print, experiments_file=None):
    """Run an experiment's rows into ``output_dir/<row>/`` and write ``summary.csv`` and ``summary.md``.

    Args:
        name: ``positives`` (Table II), ``disable-one`` (III), ``add-one`` (V) or an alias.
        base_config: the dataset's ``TrainConfig`` (e.g. ``load_config("ksdd")``); rows override it.
        folds: folds to run (None: all of the protocol); results are joined over them.
        scale / input_size: a smaller input than the paper's (for CPUs).
        epochs_max / epochs_scale: cap / scale every row's epochs.
        only: names of the rows to run (the summary lists every row finished so far).
        figures, verbose, log: passed to ``kdefect.training.train``.

    Folds finished earlier with the same settings are kept and an
    interrupted fold continues from its last epoch checkpoint, so running
    again continues an experiment where it stopped; a finished fold with
    other settings is refused (``InputError``) before anything trains. A
    diverged row is reported as such and the others still run. Returns the summary rows (dicts).

    Example:
    >>> import tempfile
    >>> from kdefect.config import TrainConfig
    >>> base = TrainConfig(num_samples=24, input_size=(64, 128), batch_size=4)
    >>> rows = run_experiment("add-one", base, tempfile.mkdtemp(), epochs_max=1,
    ...                       only=["nothing"], log=lambda *a: None)
    >>> rows[0]["row"], rows[0]["status"], rows[1]["status"]
    ('nothing', 'trained', 'not run')
    """
    from kdefect.experiment_summary import summary_row, write_summary

    experiment = get_experiment(name, experiments_file)
    selected = plan_experiment(experiment, base_config, folds, scale, input_size, epochs_max, epochs_scale,
                               only)
    everything = plan_experiment(experiment, base_config, folds, scale, input_size, epochs_max, epochs_scale)
    output_dir = Path(output_dir)
    for planned in selected:  # refuse mismatched earlier results before training anything
        _collect(planned, output_dir / planned.row.name, strict=True)
    outcome = {}
    start = time.time()
    for i, planned in enumerate(selected, 1):
        log(f"[{i}/{len(selected)}] {experiment.name} / {planned.row.name}: {planned.row.label}")
        row_dir = output_dir / planned.row.name
        fold_metrics, status = _run_row(planned, row_dir, verbose, figures, log)
        outcome[planned.row.name] = (_join_row(planned, row_dir, fold_metrics) if fold_metrics else None, status)
    rows = []
    for planned in everything:
        row_dir = output_dir / planned.row.name
        if planned.row.name not in outcome:
            done = _collect(planned, row_dir, strict=False)
            outcome[planned.row.name] = ((_join_row(planned, row_dir, done), "earlier")
                                         if all(m is not None for m in done) else (None, "not run"))
        metrics, status = outcome[planned.row.name]
        rows.append(summary_row(experiment, planned, metrics, status, row_dir))
    write_summary(experiment, everything, rows, output_dir, time.time() - start)
    return rows
