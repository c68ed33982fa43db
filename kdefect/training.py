"""One training run: configuration -> data -> ``model.fit`` with callbacks -> evaluation -> run directory.

Example:
>>> from kdefect.config import TrainConfig
>>> cfg = TrainConfig(num_samples=24, input_size=(64, 128), epochs=1, batch_size=4)
>>> metrics = train(cfg, output="/tmp/kdefect-doctest-run", overwrite=True, verbose=0)
>>> sorted(k for k in ("ap", "auc", "fp", "fn") if k in metrics)
['ap', 'auc', 'fn', 'fp']
"""

import hashlib
import platform
import shutil
import time
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf
import yaml

import kdefect
from kdefect.callbacks import (
    CHECKPOINT_DIR,
    DynamicBalance,
    EpochCheckpoint,
    NonFiniteGuard,
    ValidationAP,
    atomic_save,
    read_checkpoint,
    replace_atomically,
    write_json_atomic,
)
from kdefect.data.datasets import load_splits
from kdefect.data.pipeline import evaluation_dataset, training_dataset
from kdefect.data.sampling import epoch_schedule
from kdefect.distribute import check_global_batch, fit_model, get_strategy, is_multi_worker, worker_output
from kdefect.errors import InputError, TrainingDiverged
from kdefect.evaluation import (
    METRICS_JSON,
    evaluate_samples,
    write_csv,
    write_figures,
    write_json,
    write_results,
)
from kdefect.metrics import join_folds
from kdefect.model import SegDecNet, float32_copy

MODEL_FILE = "model.keras"
BEST_MODEL_FILE = "best.keras"
CONFIG_FILE = "config.yaml"
HISTORY_CSV = "history.csv"
MULTI_FOLD = {"ksdd": (0, 1, 2), "dagm": tuple(range(1, 11))}


def folds_of(config):
    """The folds a configuration runs: its ``fold``, or the dataset's whole protocol when None.

    Example:
    >>> from kdefect.config import TrainConfig
    >>> folds_of(TrainConfig(dataset="ksdd", fold=None)), folds_of(TrainConfig())
    ([0, 1, 2], [0])
    """
    if config.fold is not None:
        return [config.fold]
    return list(MULTI_FOLD.get(config.dataset, (0,)))


def check_training_set(samples, config):
    """Raise ``InputError`` when ``samples`` cannot make a training epoch under ``config``.

    An epoch shows every defective image once plus as many defect-free ones,
    in whole batches: it needs at least one defective image, at least as many
    defect-free ones, and at least ``batch_size`` images in all. Checked
    before the run directory is created.

    Example:
    >>> from kdefect.config import TrainConfig
    >>> from kdefect.data.samples import SampleSet
    >>> clean = SampleSet.from_arrays(np.zeros((3, 64, 64, 1), np.uint8), [None] * 3)
    >>> try:
    ...     check_training_set(clean, TrainConfig())
    ... except InputError as err:
    ...     print(err)
    cannot train on the synthetic training set (3 images, 0 defective): the training set has no positive (defective) samples
    """
    try:
        epoch_schedule(samples.is_positive, 1, config.batch_size, config.freq_sampling, config.seed)
    except ValueError as err:
        raise InputError(
            f"cannot train on the {config.dataset} training set ({len(samples)} images, "
            f"{int(np.sum(samples.is_positive))} defective): {err}"
        ) from None


def resolve_precision(name, gpus=None, cpuinfo=None):
    """The Keras dtype policy for a precision name; ``auto`` picks what the hardware runs fastest.

    ``auto``: ``mixed_float16`` on GPUs, ``mixed_bfloat16`` on CPUs with
    AVX-512 BF16 or AMX (training measured about 2x faster than float32 on a 2-core AMD
    EPYC with AVX-512 BF16, docs/PERFORMANCE.md), otherwise ``float32``.
    ``gpus`` (a count) and ``cpuinfo`` (the text of /proc/cpuinfo) default
    to this machine's.

    Example:
    >>> resolve_precision("float32")
    'float32'
    >>> resolve_precision("auto", gpus=0, cpuinfo="flags: fpu avx512f avx512_bf16")
    'mixed_bfloat16'
    >>> resolve_precision("auto", gpus=0, cpuinfo="flags: fpu avx2"), resolve_precision("auto", gpus=1)
    ('float32', 'mixed_float16')
    """
    if name != "auto":
        return name
    if _gpu_count(gpus):
        return "mixed_float16"
    return "mixed_bfloat16" if cpu_has_bf16(cpuinfo) else "float32"


def _gpu_count(gpus=None):
    """``gpus`` if given, else the number of GPUs TensorFlow sees."""
    return len(tf.config.list_physical_devices("GPU")) if gpus is None else gpus


def cpu_has_bf16(cpuinfo=None):
    """Whether the CPU computes bf16 natively (the ``avx512_bf16`` or ``amx_bf16`` flag).

    Without them oneDNN emulates bf16: a ``mixed_bfloat16`` training step took
    8.9x as long as a float32 one on a 2-core AMD EPYC (Zen 3) with AVX2 only
    (docs/PERFORMANCE.md). ``cpuinfo`` (the text of /proc/cpuinfo) defaults
    to this machine's.

    Example:
    >>> cpu_has_bf16("flags: fpu avx2 avx512f avx512_bf16"), cpu_has_bf16("flags: fpu avx2 fma")
    (True, False)
    """
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text()
        except OSError:
            cpuinfo = ""
    return bool(set(cpuinfo.split()) & {"avx512_bf16", "amx_bf16"})


def precision_warning(precision, gpus=None, cpuinfo=None):
    """A one-line warning when ``precision`` would be emulated here (bf16 on a CPU without it), else None.

    ``gpus`` (a count) and ``cpuinfo`` (the text of /proc/cpuinfo) default
    to this machine's.

    Example:
    >>> precision_warning("mixed_bfloat16", gpus=0, cpuinfo="flags: fpu avx2")[:33]
    'warning: this CPU has no native b'
    >>> precision_warning("float32") is None, precision_warning("mixed_bfloat16", gpus=1) is None
    (True, True)
    """
    if precision != "mixed_bfloat16":
        return None
    if _gpu_count(gpus) or cpu_has_bf16(cpuinfo):
        return None
    return ("warning: this CPU has no native bf16 (no avx512_bf16 or amx_bf16 flag), so mixed_bfloat16 is "
            "emulated and several times slower than float32 (use --precision float32 or auto)")


def separation_note(history_csv, min_epochs=20):
    r"""A one-line note when the training AUC never reached 1.0, else None.

    The decision network's training AUC (the ``auc`` column of
    ``history.csv``) reaches 1.0 in all but two of the 5- and 10-positive
    KolektorSDD runs whose training AUC docs/RESULTS.md records; those two
    (5 positives at 352×128: seed 1337 on fold 0, seed 42 on fold 1) score
    every image alike and reach 46 and 36 % AP where other seeds on the
    same folds reach 84–90 %.
    Training with the same data and another ``--seed`` is then worth a try.
    Runs shorter than ``min_epochs`` (smoke tests, short fine-tuning) get no
    note: the curve is too short to say anything. A missing file or column
    gives None too. This is a hint, not an error: on data with label noise
    a good model may not separate every training image.

    Example:
    >>> import tempfile
    >>> path = Path(tempfile.mkdtemp()) / "history.csv"
    >>> _ = path.write_text("epoch,auc\n" + "".join(f"{e},0.9\n" for e in range(30)))
    >>> separation_note(path)[:46]
    'note: the training AUC stayed below 1.0 in all'
    >>> _ = path.write_text("epoch,auc\n" + "".join(f"{e},1.0\n" for e in range(30)))
    >>> separation_note(path) is None
    True
    """
    from kdefect.reports import _read_history

    try:
        values = [v for v in _read_history(history_csv).get("auc", []) if not np.isnan(v)]
    except OSError:
        return None
    if len(values) < min_epochs or max(values) >= 1.0:
        return None
    return (f"note: the training AUC stayed below 1.0 in all {len(values)} epochs (best {max(values):.3f}): "
            "the decision network never separated its own training images. On KolektorSDD such runs "
            "scored far below others with the same data; try another --seed (docs/RESULTS.md).")


def build_model(config, input_shape):
    """A compiled ``SegDecNet`` for the configuration (plain SGD, the paper's loss settings).

    The model computes in ``config.precision`` (see ``resolve_precision``;
    the logit layers and the losses stay float32) and uses XLA if
    ``config.jit_compile`` (None: Keras's ``auto``, i.e. only on GPUs).
    The process-wide Keras dtype policy is left as it was.

    Example:
    >>> from kdefect.config import TrainConfig
    >>> build_model(TrainConfig(), (128, 64, 1)).delta
    1.0
    """
    saved_policy = keras.config.dtype_policy()
    keras.config.set_dtype_policy(resolve_precision(config.precision))
    try:  # the layers keep the policy they are built with; the global one is restored
        model = SegDecNet(
            input_shape=input_shape,
            gradient_adjustment=config.grad_adjust,
            first_block_convs=config.first_block_convs,
        )
    finally:
        keras.config.set_dtype_policy(saved_policy)
    model.compile(
        optimizer=keras.optimizers.SGD(learning_rate=config.lr),
        delta=config.delta,
        dynamic_balance=config.dyn_balance,
        loss_reduction=config.loss_reduction,
        jit_compile="auto" if config.jit_compile is None else bool(config.jit_compile),
    )
    return model


def fit(config, splits, run_dir, verbose="auto", resume=False, strategy=None):
    """Train a model on ``splits.train``; writes history, TensorBoard logs, checkpoints and the models.

    Every epoch end saves a checkpoint (``EpochCheckpoint``); with
    ``resume=True`` training continues from the folder's last checkpoint:
    its weights, optimizer state and λ are loaded and the seeded epoch
    schedule (a pure function of the seed and the data) is recomputed and
    entered after the epochs already done, so the result is identical to an
    uninterrupted run. Training draws no other random numbers (plain SGD, no
    dropout, no ``tf.data`` shuffling). A NaN/inf loss raises
    ``TrainingDiverged`` naming the epoch, the loss and the checkpoint kept.

    Returns ``(model, info)`` where ``info`` records the evaluated model
    (``final`` or ``best``), the best validation AP/epoch and the negative
    usage counts of the sampler.

    The model is built and compiled in the scope of ``strategy`` (default:
    ``get_strategy(config.strategy)``); ``config.batch_size`` is the global
    batch, split across its replicas (see ``kdefect.distribute``).

    Example:
    >>> from kdefect.config import TrainConfig
    >>> cfg = TrainConfig(num_samples=24, input_size=(64, 128), epochs=1, batch_size=4)
    >>> import tempfile
    >>> folder = Path(tempfile.mkdtemp())
    >>> model, info = fit(cfg, load_splits(cfg), folder, verbose=0)
    >>> info["evaluated_model"], read_checkpoint(folder)["epoch"]
    ('final', 1)
    """
    run_dir = Path(run_dir)
    strategy = strategy or get_strategy(config.strategy, batch_size=config.batch_size)
    check_global_batch(config.batch_size, strategy)
    configure_determinism(config.seed)
    with strategy.scope():
        model = build_model(config, splits.train.input_shape)
    schedule, usage = epoch_schedule(
        splits.train.is_positive, config.epochs, config.batch_size, config.freq_sampling, config.seed
    )
    fingerprint = hashlib.sha256(np.ascontiguousarray(schedule).tobytes()).hexdigest()
    state = read_checkpoint(run_dir) if resume else None
    start = _restore(model, state, run_dir, fingerprint, config) if state else 0
    if start > 0:
        _truncate_history(run_dir / HISTORY_CSV, start)
    steps = schedule.shape[1] // config.batch_size
    dataset = training_dataset(
        splits.train, schedule[start:], config.batch_size, config.cls_target, config.weighted
    ) if start < config.epochs else None
    callbacks = [DynamicBalance(config.epochs, enabled=config.dyn_balance)]
    validation = None
    if splits.validation is not None:
        validation = ValidationAP(
            evaluation_dataset(splits.validation, config.batch_size),
            splits.validation.is_positive,
            config.epochs,
            every=config.validate_every,
            best_path=run_dir / BEST_MODEL_FILE,
        )
        if state:
            validation.best_ap = state.get("best_val_ap", validation.best_ap)
            validation.best_epoch = state.get("best_epoch")
        callbacks.append(validation)
    callbacks += [
        keras.callbacks.CSVLogger(str(run_dir / HISTORY_CSV), append=start > 0),
        keras.callbacks.TensorBoard(log_dir=str(run_dir / "tensorboard"), write_graph=False),
        NonFiniteGuard(),
        EpochCheckpoint(run_dir, config.epochs, validation, extra={"schedule_sha256": fingerprint}),
    ]
    if dataset is not None:
        try:
            # The schedule is already shuffled per epoch; fit_model reads it in order.
            fit_model(model, dataset, config.epochs, steps, callbacks, verbose, initial_epoch=start)
        except TrainingDiverged as err:
            raise err.with_note(_kept_note(run_dir)) from None
    model = float32_copy(model)  # mixed precision trains; the model is saved and evaluated in float32
    atomic_save(model, run_dir / MODEL_FILE)
    info = {"evaluated_model": "final", "negative_usage": usage.tolist()}
    if validation is not None:
        info.update(best_val_ap=validation.best_ap, best_epoch=validation.best_epoch)
        if config.use_best and (run_dir / BEST_MODEL_FILE).exists():
            model = float32_copy(keras.saving.load_model(run_dir / BEST_MODEL_FILE))
            info["evaluated_model"] = "best"
    return model, info


def configure_determinism(seed):
    """Seed Python, NumPy and TensorFlow; on CPU-only machines also make TensorFlow's ops deterministic.

    With the seed, a CPU run is repeatable bit for bit (weights, history,
    metrics). ``tf.config.experimental.enable_op_determinism`` (process-wide)
    costs nothing measurable on CPU for this model (docs/RELIABILITY.md) and
    guards against kernels that reduce in a thread-dependent order; it is not
    turned on when a GPU is visible, where it slows training down and some
    ops have no deterministic kernel. ``tf.data`` maps keep their order
    (``deterministic`` defaults to True). Returns whether op determinism is on.

    Example:
    >>> configure_determinism(1337) in (True, False)
    True
    """
    keras.utils.set_random_seed(seed)
    if tf.config.list_physical_devices("GPU"):
        return False
    tf.config.experimental.enable_op_determinism()
    return True


def _restore(model, state, run_dir, fingerprint, config):
    """Load a checkpoint into ``model``; return the number of epochs it has done."""
    where = run_dir / CHECKPOINT_DIR
    if state.get("schedule_sha256") != fingerprint or state.get("epochs") != config.epochs:
        raise InputError(
            f"cannot resume {run_dir}: its data or settings changed since it was interrupted "
            "(the epoch schedule differs); start over with --overwrite"
        )
    path = where / str(state.get("model"))
    if not path.exists():
        raise InputError(f"cannot resume {run_dir}: checkpoint {path} is missing; start over with --overwrite")
    model.optimizer.build(model.trainable_variables)
    model.load_weights(path)
    return int(state["epoch"])


def _truncate_history(path, epochs):
    """Keep the header and the rows of the first ``epochs`` epochs of a CSVLogger file."""
    if not path.exists():
        return
    lines = path.read_text().splitlines(keepends=True)
    kept = lines[:1] + [line for line in lines[1:] if line.split(",", 1)[0].strip().isdigit()
                        and int(line.split(",", 1)[0]) < epochs]
    replace_atomically(path, lambda tmp: Path(tmp).write_text("".join(kept)))


def _kept_note(run_dir):
    state = read_checkpoint(run_dir)
    if state is None:
        return "; no checkpoint was written (it diverged in the first epoch); try a lower --lr"
    return (f"; the last good checkpoint (epoch {state['epoch']}) is kept in {run_dir / CHECKPOINT_DIR}"
            "; try a lower --lr")


def evaluate_run(model, config, test, run_dir, fold=None, figures=True, info=None, wall_time=None):
    """Evaluate on the test samples and write metrics.json, results.csv, plots and reports."""
    from kdefect.reports import SCORES_PNG, plot_history, plot_pr_roc, plot_scores, write_report

    run_dir = Path(run_dir)
    metrics, scores, seg = evaluate_samples(model, test, config.batch_size)
    rows = write_results(run_dir, test, scores, metrics["threshold"], fold)
    plot_pr_roc(test.is_positive, scores, run_dir)
    plot_scores(test.is_positive, scores, run_dir / SCORES_PNG, metrics["threshold"], test.names)
    if (run_dir / HISTORY_CSV).exists():
        plot_history(run_dir / HISTORY_CSV, run_dir / "history.png")
    if figures:
        paths = write_figures(run_dir, test, scores, seg, weighted=config.weighted)
        for row in rows:
            row["figure"] = paths.get(row["image"])
    metrics.update(_provenance(config, info, wall_time))
    write_json(run_dir / METRICS_JSON, metrics)
    write_report(run_dir, metrics, rows, config.to_dict())
    return metrics, rows


def _provenance(config, info, wall_time):
    import sklearn

    out = {
        "config": config.to_dict(),
        "seed": config.seed,
        "training_precision": resolve_precision(config.precision),
        "versions": {
            "kdefect": kdefect.__version__,
            "tensorflow": tf.__version__,
            "keras": keras.__version__,
            "numpy": np.__version__,
            "scikit-learn": sklearn.__version__,
            "python": platform.python_version(),
        },
    }
    if wall_time is not None:
        out["wall_time_seconds"] = round(float(wall_time), 2)
    if info:
        out.update({k: v for k, v in info.items() if k != "negative_usage"})
    return out


def prepare_run_dir(output, overwrite=False):
    """Create the run directory; refuse to reuse a non-empty one unless ``overwrite``.

    An interrupted run gets a message that suggests ``--resume``.
    ``overwrite`` deletes only kdefect run directories (with a
    ``config.yaml``), never an unrelated non-empty folder.

    Example:
    >>> prepare_run_dir("/tmp/kdefect-doctest-prepare", overwrite=True).name
    'kdefect-doctest-prepare'
    """
    run_dir = Path(output)
    if run_dir.exists() and not run_dir.is_dir():
        raise InputError(f"run directory {run_dir} exists and is not a directory")
    if run_dir.exists() and any(run_dir.iterdir()):
        if not (run_dir / CONFIG_FILE).exists():
            raise InputError(
                f"{run_dir} already exists, is not empty and is not a kdefect run directory "
                "(no config.yaml); choose another --output"
            )
        if not overwrite:
            if run_status(run_dir) == "interrupted":
                raise InputError(
                    f"run directory {run_dir} holds an interrupted run{_progress(run_dir)}: continue it with "
                    f"`kdefect train --resume {run_dir}`, or start over with --overwrite"
                )
            raise InputError(
                f"run directory {run_dir} already exists and is not empty (use --overwrite or another --output)"
            )
        shutil.rmtree(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    return run_dir


def run_status(run_dir):
    """The state of a run directory: ``missing``, ``empty``, ``other`` (no kdefect run),
    ``interrupted`` or ``complete``.

    A run is complete when its top-level ``metrics.json`` exists and no fold's
    checkpoint is still marked as training.

    Example:
    >>> run_status("/nonexistent/run")
    'missing'
    """
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        return "missing"
    if not any(run_dir.iterdir()):
        return "empty"
    if not (run_dir / CONFIG_FILE).exists():
        return "other"
    states = [read_checkpoint(d) for d in (run_dir, *sorted(run_dir.glob("fold_*")))]
    if (run_dir / METRICS_JSON).exists() and all(s is None or s["status"] == "done" for s in states):
        return "complete"
    return "interrupted"


def _progress(run_dir):
    """`` (epoch 2 of 4 saved)`` for the fold being trained, or an empty string."""
    for folder in (run_dir, *sorted(Path(run_dir).glob("fold_*"))):
        state = read_checkpoint(folder)
        if state and state["status"] == "training":
            where = f" of {folder.name}" if folder != Path(run_dir) else ""
            return f" (epoch {state['epoch']} of {state['epochs']}{where} saved)"
    return ""


def _mark_done(fold_dir, rows):
    """Record that a fold is trained and evaluated (with its result rows) and drop its checkpoint model."""
    state = read_checkpoint(fold_dir) or {"format": 1}
    state.pop("model", None)
    state.update(status="done", rows=rows)
    (fold_dir / CHECKPOINT_DIR).mkdir(exist_ok=True)
    write_json_atomic(fold_dir / CHECKPOINT_DIR / "state.json", state)
    folder = fold_dir / CHECKPOINT_DIR
    for old in [*folder.glob("epoch-*.keras"), *folder.glob(".*.tmp-*")]:
        old.unlink()


def _finished_fold(fold_dir):
    """``(metrics, rows)`` of a fold an earlier session finished, or None."""
    state = read_checkpoint(fold_dir)
    if not state or state["status"] != "done" or not (fold_dir / METRICS_JSON).exists():
        return None
    import json

    return json.loads((fold_dir / METRICS_JSON).read_text()), state.get("rows", [])


def default_output(config):
    """``runs/<dataset>-<YYYYmmdd-HHMMSS>``."""
    return Path("runs") / f"{config.dataset}-{time.strftime('%Y%m%d-%H%M%S')}"


def train(config, output=None, overwrite=False, verbose="auto", figures=True, log=print, resume=False):
    """Train and evaluate every fold of ``config``; return the (joined) metrics.

    Multi-fold protocols (KSDD: 3 folds; DAGM: 10 classes) write one
    sub-directory per fold and join them at the top level (mean AP/AUC, summed
    FP/FN, each fold at its own threshold). Bad input raises ``InputError``
    before anything is written. ``resume=True`` continues the interrupted run
    in ``output`` (see ``resume_run``): finished folds are kept, the
    interrupted one continues from its last checkpoint.

    ``config.strategy`` picks the devices (``kdefect.distribute``); with
    several workers only the chief keeps the run directory.
    """
    # First: a multi-worker strategy must be set up before TensorFlow runs anything.
    strategy = get_strategy(config.strategy, batch_size=config.batch_size)
    check_global_batch(config.batch_size, strategy)
    if resume and is_multi_worker(strategy):
        raise InputError("--resume is not supported with --strategy multi-worker; start over with --overwrite")
    folds = folds_of(config)
    first = load_splits(config.replace(fold=folds[0]))
    check_training_set(first.train, config)
    warning = precision_warning(config.precision)
    if warning:
        log(warning)
    if resume:
        run_dir = Path(output)
    else:
        run_dir = prepare_run_dir(worker_output(strategy, output or default_output(config)), overwrite)
        text = yaml.safe_dump(config.to_dict(), sort_keys=False)
        replace_atomically(run_dir / CONFIG_FILE, lambda tmp: Path(tmp).write_text(text))
    results, fold_metrics = [], []
    start = time.time()
    for k, fold in enumerate(folds):
        fold_config = config.replace(fold=fold)
        splits = first if k == 0 else load_splits(fold_config)
        if k:
            check_training_set(splits.train, fold_config)
        fold_dir = run_dir if len(folds) == 1 else run_dir / f"fold_{fold}"
        fold_dir.mkdir(exist_ok=True)
        if len(folds) > 1:
            log(f"fold {fold}: {len(splits.train)} training images "
                f"({splits.train.num_positives} defective), {len(splits.test)} test images")
        finished = _finished_fold(fold_dir) if resume else None
        if finished:
            log(f"fold {fold}: finished earlier, keeping its results")
            metrics, rows = finished
        else:
            t0 = time.time()
            model, info = fit(fold_config, splits, fold_dir, verbose, resume=resume, strategy=strategy)
            metrics, rows = evaluate_run(
                model, fold_config, splits.test, fold_dir, fold if len(folds) > 1 else None, figures, info,
                time.time() - t0
            )
            _mark_done(fold_dir, rows)
            note = separation_note(fold_dir / HISTORY_CSV)
            if note:
                log(f"fold {fold}: {note}" if len(folds) > 1 else note)
        fold_metrics.append(metrics)
        results += _rebase_figures(rows, fold_dir, run_dir)
    metrics = _join(run_dir, config, fold_metrics, results, time.time() - start)
    return {**metrics, "run_dir": str(run_dir)}


def resume_run(run_dir, verbose="auto", figures=True, log=print, **overrides):
    """Continue an interrupted run from its ``config.yaml`` and checkpoints; return its metrics.

    Finished folds keep their results; the interrupted fold restarts from its
    last epoch checkpoint, and the result equals that of an uninterrupted run.
    ``overrides`` (e.g. ``data_dir``, if the data moved) change the stored
    configuration; a change of data or settings that alters the epoch schedule
    is refused.

    Example:
    >>> from kdefect.config import TrainConfig
    >>> try:
    ...     resume_run("/nonexistent/run")
    ... except ValueError as err:
    ...     print(err)
    cannot resume /nonexistent/run: no such run directory
    """
    run_dir = Path(run_dir)
    status = run_status(run_dir)
    if status in ("missing", "empty", "other"):
        reason = {"missing": "no such run directory", "empty": "the directory is empty",
                  "other": "it is not a kdefect run directory (no config.yaml)"}[status]
        raise InputError(f"cannot resume {run_dir}: {reason}")
    if status == "complete":
        raise InputError(f"run {run_dir} is already complete (metrics.json); nothing to resume")
    from kdefect.config import TrainConfig, read_yaml

    values = read_yaml(run_dir / CONFIG_FILE)
    values.update({k: v for k, v in overrides.items() if v is not None})
    config = TrainConfig(**values)
    log(f"resuming {run_dir}{_progress(run_dir)}")
    return train(config, output=run_dir, verbose=verbose, figures=figures, log=log, resume=True)


def _rebase_figures(rows, fold_dir, run_dir):
    """Make per-fold figure paths relative to the run directory."""
    for row in rows:
        if row.get("figure") and fold_dir != run_dir:
            row["figure"] = str((fold_dir / row["figure"]).relative_to(run_dir))
    return rows


def _join(run_dir, config, fold_metrics, results, wall_time):
    """One fold: its metrics. Several: join them and write the top-level results and reports."""
    if len(fold_metrics) == 1:
        return fold_metrics[0]
    from kdefect.reports import write_report

    joined = join_folds(fold_metrics)
    joined.update(_provenance(config, None, wall_time))
    write_csv(run_dir / "results.csv", results)
    write_json(run_dir / METRICS_JSON, joined)
    write_report(run_dir, joined, results, config.to_dict())
    return joined


def find_run_config(path):
    """The ``config.yaml`` of the run a model or run directory belongs to (or None).

    Looks in the directory itself and its parent (fold sub-directories).
    """
    path = Path(path)
    start = path if path.is_dir() else path.parent
    for folder in (start, start.parent):
        if (folder / CONFIG_FILE).exists():
            return folder / CONFIG_FILE
    return None


def run_config(path, **overrides):
    """The ``TrainConfig`` stored with a run (``config.yaml``), with overrides applied."""
    from kdefect.config import TrainConfig, read_yaml

    found = find_run_config(path)
    if found is None:
        raise InputError(f"no {CONFIG_FILE} found next to {path}: pass --dataset to say which data to use")
    values = read_yaml(found)
    values.update({k: v for k, v in overrides.items() if v is not None})
    return TrainConfig(**values)


def evaluate_path(path, figures=True, log=print, **overrides):
    """Re-evaluate a saved run directory (or one ``.keras`` model) and rewrite its reports.

    For a run directory every fold's ``model.keras`` is evaluated on its
    fold's test set and the folds are joined, exactly as after training.
    A bare model file is evaluated on the data given by ``overrides``
    (e.g. ``dataset="ksdd", fold=0``) and reports go next to it.
    """
    from kdefect.config import load_config
    from kdefect.export import load_keras_model

    path = Path(path)
    if not path.exists():
        raise InputError(f"{path} does not exist")
    if path.is_dir():
        config = run_config(path, **overrides)
        fold_dirs = sorted(p for p in path.glob("fold_*") if (p / MODEL_FILE).exists())
        if not fold_dirs and not (path / MODEL_FILE).exists():
            raise InputError(f"{path} holds no {MODEL_FILE} (is it a kdefect run directory?)")
        targets = [(path, config.fold)] if not fold_dirs else [
            (d, int(d.name.split("_", 1)[1])) for d in fold_dirs
        ]
    else:
        load_keras_model(path)  # a file that is not a model fails before any data is read
        config = (run_config(path, **overrides) if find_run_config(path)
                  else load_config(overrides.pop("dataset", None) or "synthetic", **overrides))
        targets = [(path.parent, config.fold if config.fold is not None else 0)]
    fold_metrics, results = [], []
    for fold_dir, fold in targets:
        fold_config = config.replace(fold=fold if fold is not None else 0)
        splits = load_splits(fold_config)
        model_file = path if path.is_file() else fold_dir / (
            BEST_MODEL_FILE if config.use_best and (fold_dir / BEST_MODEL_FILE).exists() else MODEL_FILE)
        model = load_keras_model(model_file, compile=True)
        log(f"evaluating {model_file} on {len(splits.test)} test images")
        metrics, rows = evaluate_run(model, fold_config, splits.test, fold_dir,
                                     fold if len(targets) > 1 else None, figures)
        fold_metrics.append(metrics)
        results += _rebase_figures(rows, fold_dir, path)
    return _join(path, config, fold_metrics, results, None)


def export_samples(model_path, limit=32):
    """Images for exporting a model of a run: ``(test images, their labels, training images)``.

    Up to ``limit`` test images (defective ones first, then clean ones) for the
    parity check and as many training images for int8 calibration, read with
    the run's own configuration. A model without a run falls back to
    synthetic surfaces at the model's input size.
    """
    from kdefect.config import TrainConfig

    if find_run_config(model_path) is not None:
        config = run_config(model_path)
        fold_dir = Path(model_path).parent
        fold = int(fold_dir.name.split("_", 1)[1]) if fold_dir.name.startswith("fold_") else config.fold
        splits = load_splits(config.replace(fold=fold if fold is not None else folds_of(config)[0]))
    else:
        model = keras.saving.load_model(model_path)
        height, width, channels = model.image_shape
        splits = load_splits(TrainConfig(input_size=(height, width), channels=channels, num_samples=2 * limit))
    test, train_set = splits.test, splits.train
    order = np.argsort(~test.is_positive, kind="stable")[:limit]
    return _images(test, order), test.is_positive[order], _images(train_set, np.arange(min(limit, len(train_set))))


def _images(samples, indices):
    from kdefect.evaluation import sample_image

    return np.stack([sample_image(samples, i) for i in indices])
