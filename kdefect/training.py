"""One training run: configuration -> data -> ``model.fit`` with callbacks -> evaluation -> run directory.

Example:
>>> from kdefect.config import TrainConfig
>>> cfg = TrainConfig(num_samples=24, input_size=(64, 128), epochs=1, batch_size=4)
>>> metrics = train(cfg, output="/tmp/kdefect-doctest-run", overwrite=True, verbose=0)
>>> sorted(k for k in ("ap", "auc", "fp", "fn") if k in metrics)
['ap', 'auc', 'fp', 'fn']
"""

import platform
import shutil
import time
from pathlib import Path

import keras
import numpy as np
import yaml

import kdefect
from kdefect.callbacks import DynamicBalance, ValidationAP
from kdefect.data.datasets import load_splits
from kdefect.data.pipeline import evaluation_dataset, training_dataset
from kdefect.data.sampling import epoch_schedule
from kdefect.errors import InputError
from kdefect.evaluation import (
    METRICS_JSON,
    evaluate_samples,
    write_csv,
    write_figures,
    write_json,
    write_results,
)
from kdefect.metrics import join_folds
from kdefect.model import SegDecNet

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


def resolve_precision(name):
    """The Keras dtype policy for a precision name; ``auto`` picks what the hardware runs fastest.

    ``auto``: ``mixed_float16`` on GPUs, ``mixed_bfloat16`` on CPUs with
    AVX-512 BF16 or AMX, otherwise ``float32``.

    Example:
    >>> resolve_precision("float32")
    'float32'
    """
    if name != "auto":
        return name
    import tensorflow as tf

    if tf.config.list_physical_devices("GPU"):
        return "mixed_float16"
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        flags = ""
    return "mixed_bfloat16" if ("avx512_bf16" in flags or "amx_bf16" in flags) else "float32"


def build_model(config, input_shape):
    """A compiled ``SegDecNet`` for the configuration (plain SGD, the paper's loss settings).

    Example:
    >>> from kdefect.config import TrainConfig
    >>> build_model(TrainConfig(), (128, 64, 1)).delta
    1.0
    """
    keras.config.set_dtype_policy(resolve_precision(config.precision))
    model = SegDecNet(
        input_shape=input_shape,
        gradient_adjustment=config.grad_adjust,
        first_block_convs=config.first_block_convs,
    )
    model.compile(
        optimizer=keras.optimizers.SGD(learning_rate=config.lr),
        delta=config.delta,
        dynamic_balance=config.dyn_balance,
        loss_reduction=config.loss_reduction,
    )
    return model


def fit(config, splits, run_dir, verbose="auto"):
    """Train a model on ``splits.train``; writes history, TensorBoard logs and the models.

    Returns ``(model, info)`` where ``info`` records the evaluated model
    (``final`` or ``best``), the best validation AP/epoch and the negative
    usage counts of the sampler.
    """
    run_dir = Path(run_dir)
    keras.utils.set_random_seed(config.seed)
    model = build_model(config, splits.train.input_shape)
    schedule, usage = epoch_schedule(
        splits.train.is_positive, config.epochs, config.batch_size, config.freq_sampling, config.seed
    )
    steps = schedule.shape[1] // config.batch_size
    dataset = training_dataset(
        splits.train, schedule, config.batch_size, config.cls_target, config.weighted
    )
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
        callbacks.append(validation)
    callbacks += [
        keras.callbacks.CSVLogger(str(run_dir / HISTORY_CSV)),
        keras.callbacks.TensorBoard(log_dir=str(run_dir / "tensorboard"), write_graph=False),
    ]
    model.fit(dataset, epochs=config.epochs, steps_per_epoch=steps, callbacks=callbacks, verbose=verbose,
              shuffle=False)  # the schedule is already shuffled per epoch
    model.save(run_dir / MODEL_FILE)
    info = {"evaluated_model": "final", "negative_usage": usage.tolist()}
    if validation is not None:
        info.update(best_val_ap=validation.best_ap, best_epoch=validation.best_epoch)
        if config.use_best and (run_dir / BEST_MODEL_FILE).exists():
            model = keras.saving.load_model(run_dir / BEST_MODEL_FILE)
            info["evaluated_model"] = "best"
    return model, info


def evaluate_run(model, config, test, run_dir, fold=None, figures=True, info=None, wall_time=None):
    """Evaluate on the test samples and write metrics.json, results.csv, plots and reports."""
    from kdefect.reports import plot_history, plot_pr_roc, write_report

    run_dir = Path(run_dir)
    metrics, scores, seg = evaluate_samples(model, test, config.batch_size)
    rows = write_results(run_dir, test, scores, metrics["threshold"], fold)
    plot_pr_roc(test.is_positive, scores, run_dir)
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
    import tensorflow as tf

    out = {
        "config": config.to_dict(),
        "seed": config.seed,
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
    """Create the run directory; refuse to reuse a non-empty one unless ``overwrite``."""
    run_dir = Path(output)
    if run_dir.exists() and any(run_dir.iterdir()):
        if not overwrite:
            raise InputError(
                f"run directory {run_dir} already exists and is not empty (use --overwrite or another --output)"
            )
        shutil.rmtree(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    return run_dir


def default_output(config):
    """``runs/<dataset>-<YYYYmmdd-HHMMSS>``."""
    return Path("runs") / f"{config.dataset}-{time.strftime('%Y%m%d-%H%M%S')}"


def train(config, output=None, overwrite=False, verbose="auto", figures=True, log=print):
    """Train and evaluate every fold of ``config``; return the (joined) metrics.

    Multi-fold protocols (KSDD: 3 folds; DAGM: 10 classes) write one
    sub-directory per fold and join them at the top level (mean AP/AUC, summed
    FP/FN, each fold at its own threshold). Bad input raises ``InputError``
    before anything is written.
    """
    folds = folds_of(config)
    first = load_splits(config.replace(fold=folds[0]))
    run_dir = prepare_run_dir(output or default_output(config), overwrite)
    (run_dir / CONFIG_FILE).write_text(yaml.safe_dump(config.to_dict(), sort_keys=False))
    results, fold_metrics = [], []
    start = time.time()
    for k, fold in enumerate(folds):
        fold_config = config.replace(fold=fold)
        splits = first if k == 0 else load_splits(fold_config)
        fold_dir = run_dir if len(folds) == 1 else run_dir / f"fold_{fold}"
        fold_dir.mkdir(exist_ok=True)
        if len(folds) > 1:
            log(f"fold {fold}: {len(splits.train)} training images "
                f"({splits.train.num_positives} defective), {len(splits.test)} test images")
        t0 = time.time()
        model, info = fit(fold_config, splits, fold_dir, verbose)
        metrics, rows = evaluate_run(
            model, fold_config, splits.test, fold_dir, fold if len(folds) > 1 else None, figures, info,
            time.time() - t0
        )
        fold_metrics.append(metrics)
        results += _rebase_figures(rows, fold_dir, run_dir)
    metrics = _join(run_dir, config, fold_metrics, results, time.time() - start)
    return {**metrics, "run_dir": str(run_dir)}


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
        config = (run_config(path, **overrides) if find_run_config(path)
                  else load_config(overrides.pop("dataset", None) or "synthetic", **overrides))
        targets = [(path.parent, config.fold if config.fold is not None else 0)]
    fold_metrics, results = [], []
    for fold_dir, fold in targets:
        fold_config = config.replace(fold=fold if fold is not None else 0)
        splits = load_splits(fold_config)
        model_file = path if path.is_file() else fold_dir / (
            BEST_MODEL_FILE if config.use_best and (fold_dir / BEST_MODEL_FILE).exists() else MODEL_FILE)
        model = keras.saving.load_model(model_file)
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
