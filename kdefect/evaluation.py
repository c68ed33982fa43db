"""Evaluate a model on a sample table and write the run directory's results and reports.

Shared by training (after ``fit``) and by ``kdefect evaluate`` (re-evaluating a
saved run), so both produce identical files.
"""

import csv
import json
from pathlib import Path

import numpy as np

from kdefect.data.pipeline import evaluation_dataset
from kdefect.metrics import image_metrics, pixel_metrics

RESULTS_CSV = "results.csv"
METRICS_JSON = "metrics.json"


def predict_scores(model, dataset):
    """Scores (sigmoid of the decision logit, (N,)) and 1/8 segmentation probabilities (N, h, w).

    Example:
    >>> import numpy as np, tensorflow as tf
    >>> from kdefect import SegDecNet
    >>> model = SegDecNet(input_shape=(128, 64, 1))
    >>> scores, seg = predict_scores(model, tf.data.Dataset.from_tensors(np.zeros((2, 128, 64, 1), "float32")))
    >>> scores.shape, seg.shape
    ((2,), (2, 16, 8))
    """
    from kdefect.distribute import predict_outputs  # one device, also for a model trained on several

    decision, segmentation = predict_outputs(model, dataset)
    scores = 1.0 / (1.0 + np.exp(-np.asarray(decision, np.float64)[:, 0]))
    seg = 1.0 / (1.0 + np.exp(-np.asarray(segmentation, np.float64)[..., 0]))
    return scores, seg.astype(np.float32)


def evaluate_samples(model, samples, batch_size=8):
    """Image and pixel metrics of ``model`` on ``samples``; returns ``(metrics, scores, seg)``.

    Pixel metrics use the images whose masks are known (negatives and
    segmented positives), at 1/8 resolution.

    Example:
    >>> from kdefect import SegDecNet
    >>> from kdefect.data.samples import SampleSet
    >>> s = SampleSet.from_arrays(np.zeros((2, 128, 64, 1), np.uint8), [None, np.ones((128, 64))])
    >>> metrics, scores, seg = evaluate_samples(SegDecNet(input_shape=(128, 64, 1)), s)
    >>> metrics["n_images"], seg.shape
    (2, (2, 16, 8))
    """
    scores, seg = predict_scores(model, evaluation_dataset(samples, batch_size))
    metrics = image_metrics(samples.is_positive, scores)
    has_mask = ~samples.is_positive | samples.is_segmented
    masks = [samples.seg_target[i] if has_mask[i] else None for i in range(len(samples))]
    metrics["pixel"] = pixel_metrics(masks, seg, threshold=0.5)
    return metrics, scores, seg


def write_results(run_dir, samples, scores, threshold, fold=None):
    """Write ``results.csv`` (image, score, ground_truth, decision[, fold]); return its rows.

    Example:
    >>> from kdefect.data.samples import SampleSet
    >>> s = SampleSet.from_arrays(np.zeros((1, 64, 64, 1), np.uint8), [None], names=["a"])
    >>> write_results("/tmp", s, np.array([0.7]), 0.5)
    [{'image': 'a', 'score': 0.7, 'ground_truth': 0, 'decision': 1}]
    """
    rows = []
    for name, score, positive in zip(samples.names, scores, samples.is_positive):
        row = {
            "image": name,
            "score": float(score),
            "ground_truth": int(positive),
            "decision": int(score >= threshold),
        }
        if fold is not None:
            row["fold"] = fold
        rows.append(row)
    write_csv(Path(run_dir) / RESULTS_CSV, rows)
    return rows


def write_csv(path, rows):
    """Write a list of dicts as CSV (columns from the first row).

    Example:
    >>> write_csv("/tmp/kd_rows.csv", [{"a": 1, "b": 2}])
    >>> Path("/tmp/kd_rows.csv").read_text().split()
    ['a,b', '1,2']
    """
    path = Path(path)
    with path.open("w", newline="") as handle:
        if rows:
            writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)


def write_figures(run_dir, samples, scores, seg, weighted=True, limit=None):
    """Per-image figures of the test set into ``run_dir/figures``; returns {name: relative path}.

    ``limit`` keeps only the highest- and lowest-scoring images (plus every
    positive) when there are many.

    Example:
    >>> from kdefect.data.samples import SampleSet
    >>> s = SampleSet.from_arrays(np.zeros((1, 64, 64, 1), np.uint8), [None], names=["a"])
    >>> write_figures("/tmp/kd_fig", s, np.array([0.2]), np.zeros((1, 8, 8)))
    {'a': 'figures/a.png'}
    """
    from kdefect.reports import plot_sample

    out = Path(run_dir) / "figures"
    out.mkdir(parents=True, exist_ok=True)
    order = np.argsort(-scores)
    if limit is not None and len(order) > limit:
        keep = set(order[: limit // 2]) | set(order[-(limit // 2):]) | set(np.flatnonzero(samples.is_positive))
        order = [i for i in order if i in keep]
    paths = {}
    for i in order:
        name = samples.names[i]
        image = sample_image(samples, i)
        weight = samples.seg_weight[i] if weighted and samples.is_positive[i] else None
        mask = samples.seg_target[i] if samples.is_positive[i] else None
        png = out / f"{name}.png"
        plot_sample(image, mask, seg[i], float(scores[i]), png, weight=weight, title=name)
        paths[name] = str(png.relative_to(run_dir))
    return paths


def sample_image(samples, i):
    """The uint8 (H, W, C) image of sample ``i``, from RAM or decoded like the pipeline does.

    Example:
    >>> from kdefect.data.samples import SampleSet
    >>> sample_image(SampleSet.from_arrays(np.zeros((1, 64, 64, 1), np.uint8), [None]), 0).shape
    (64, 64, 1)
    """
    if samples.images is not None:
        return samples.images[i]
    from kdefect.data.pipeline import evaluation_dataset as _ds

    x, _ = next(iter(_ds(samples.subset([i]), 1)))
    return (x.numpy()[0] * 255).round().astype(np.uint8)


def write_json(path, data):
    """Write JSON, converting NumPy numbers and arrays and paths (NaN stays NaN, as Python writes it).

    Example:
    >>> write_json("/tmp/kd.json", {"ap": np.float32(0.5), "n": np.int64(3)})
    >>> Path("/tmp/kd.json").read_text().split()
    ['{', '"ap":', '0.5,', '"n":', '3', '}']
    """
    Path(path).write_text(json.dumps(data, indent=2, default=_jsonable))


def _jsonable(value):
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (np.floating,)):
        return float(value)
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")
