"""Image-level and pixel-level evaluation metrics, fold and class joins.

Pure NumPy / scikit-learn. Definitions (REFERENCE.md §6):

* ``ap``: ``sklearn.metrics.average_precision_score``, the step-wise AP the
  paper's tables use. ``ap_trapezoid``: ``auc(recall, precision)`` over
  ``precision_recall_curve``, the reference's per-run (validation) AP.
* ``threshold``: the threshold of maximal F-measure, F = 2PR / (P + R + 1e-8)
  over ``precision_recall_curve``. Like the reference ``evaluation.py`` it is the
  midpoint between the best curve threshold and the next lower one, so it keeps a
  margin from both scores; as no score lies strictly between two adjacent curve
  thresholds, ``score >= threshold`` gives exactly the decisions of the best
  curve point. When the best point is the lowest score, that score is used.
* Decisions are always ``score >= threshold``.
* ``fp_at_fn0``: negatives scoring at or above the lowest positive score (the
  lowest threshold with no false negative), ``threshold_at_fn0`` that score.
  (The reference took ``thresholds[recall >= 1][0]``, which relied on old
  scikit-learn truncating the curve at full recall.)
* Undefined values (AP/AUC with one class present) are ``nan``; they never raise.

Joins (``join_folds``, ``join_classes``): AP and AUC are averaged, counts are
summed, each part being decided at its own threshold (``join_folds_results.py``).
"""

import math

import numpy as np
from sklearn.metrics import auc as _trapezoid_area
from sklearn.metrics import average_precision_score, precision_recall_curve, roc_auc_score

F_EPS = 1e-8

# Keys summed by the joins; everything else that is per-part is averaged or kept.
COUNT_KEYS = (
    "tp", "tn", "fp", "fn", "fp_at_05", "fn_at_05", "fp_at_fn0", "n_images", "n_positives",
)
MEAN_KEYS = ("ap", "ap_trapezoid", "auc")


def _f_measure(precision, recall):
    return 2.0 * precision * recall / (precision + recall + F_EPS)


def _as_arrays(labels, scores):
    labels = np.asarray(labels).reshape(-1)
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    if labels.shape != scores.shape:
        raise ValueError(f"labels and scores differ in length: {labels.size} vs {scores.size}")
    if labels.size == 0:
        raise ValueError("no images to evaluate (empty labels)")
    if not np.all(np.isfinite(scores)):
        raise ValueError("scores contain NaN or infinity")
    return labels.astype(bool), scores


def best_f_threshold(labels, scores):
    """Threshold of maximal F-measure (the midpoint rule, see the module docstring).

    With only negatives it is just above the highest score (nothing flagged);
    with only positives it is the lowest score (everything flagged).

    Example:
    >>> best_f_threshold([0, 0, 1, 1], [0.125, 0.25, 0.75, 0.875])
    0.5
    """
    labels, scores = _as_arrays(labels, scores)
    if not labels.any():
        return float(np.nextafter(scores.max(), np.inf))
    if labels.all():
        return float(scores.min())
    precision, recall, thresholds = precision_recall_curve(labels, scores)
    f = _f_measure(precision[:-1], recall[:-1])  # the last point (P=1, R=0) has no threshold
    best = int(np.argmax(f))
    if best == 0:
        return float(thresholds[0])
    return float((thresholds[best] + thresholds[best - 1]) / 2.0)


def confusion(labels, scores, threshold):
    """TP, TN, FP, FN with decisions ``score >= threshold``.

    Example:
    >>> confusion([0, 1, 1], [0.2, 0.5, 0.4], 0.5)
    (1, 1, 0, 1)
    """
    labels, scores = _as_arrays(labels, scores)
    decision = scores >= threshold
    tp = int(np.sum(decision & labels))
    tn = int(np.sum(~decision & ~labels))
    fp = int(np.sum(decision & ~labels))
    fn = int(np.sum(~decision & labels))
    return tp, tn, fp, fn


def _rates(tp, tn, fp, fn):
    """F-measure, TPR, TNR, accuracy from counts (0.0 where a denominator is empty)."""
    precision = tp / (tp + fp) if tp + fp else 0.0
    tpr = tp / (tp + fn) if tp + fn else 0.0
    tnr = tn / (tn + fp) if tn + fp else 0.0
    total = tp + tn + fp + fn
    return {
        "f_measure": float(_f_measure(precision, tpr)),
        "tpr": float(tpr),
        "tnr": float(tnr),
        "accuracy": float((tp + tn) / total) if total else 0.0,
    }


def image_metrics(labels, scores, threshold=None):
    """All image-level metrics of one test set (one run, fold or class).

    Args:
        labels: ground truth per image (truthy = defective).
        scores: classifier score per image (sigmoid of the decision logit).
        threshold: decide at this threshold instead of the max-F one.

    Returns a dict of plain Python numbers: ``ap``, ``ap_trapezoid``, ``auc``,
    ``threshold``, ``f_measure``, ``tp``, ``tn``, ``fp``, ``fn``, ``tpr``,
    ``tnr``, ``accuracy`` (at ``threshold``), ``fp_at_fn0``,
    ``threshold_at_fn0``, ``fp_at_05``, ``fn_at_05``, ``f_measure_at_05``,
    ``accuracy_at_05``, ``n_images``, ``n_positives``.

    Example:
    >>> m = image_metrics([0, 0, 1, 1], [0.1, 0.7, 0.6, 0.9])
    >>> m["ap"], m["auc"], m["fp"], m["fn"], m["fp_at_fn0"]
    (0.8333333333333333, 0.75, 1, 0, 1)
    """
    labels, scores = _as_arrays(labels, scores)
    two_classes = bool(labels.any() and not labels.all())
    if two_classes:
        ap = float(average_precision_score(labels, scores))
        precision, recall, _ = precision_recall_curve(labels, scores)
        ap_trapezoid = float(_trapezoid_area(recall, precision))
        roc_auc = float(roc_auc_score(labels, scores))
    else:
        ap = ap_trapezoid = roc_auc = math.nan
    if threshold is None:
        threshold = best_f_threshold(labels, scores)
    threshold = float(threshold)

    tp, tn, fp, fn = confusion(labels, scores, threshold)
    out = {"ap": ap, "ap_trapezoid": ap_trapezoid, "auc": roc_auc, "threshold": threshold}
    out.update({"tp": tp, "tn": tn, "fp": fp, "fn": fn})
    out.update(_rates(tp, tn, fp, fn))

    if labels.any():
        thr0 = float(scores[labels].min())
        out["fp_at_fn0"] = int(np.sum(scores[~labels] >= thr0))
        out["threshold_at_fn0"] = thr0
    else:  # no positive can be missed: nothing needs flagging
        out["fp_at_fn0"] = 0
        out["threshold_at_fn0"] = math.nan

    tp5, tn5, fp5, fn5 = confusion(labels, scores, 0.5)
    rates5 = _rates(tp5, tn5, fp5, fn5)
    out.update({
        "fp_at_05": fp5,
        "fn_at_05": fn5,
        "f_measure_at_05": rates5["f_measure"],
        "accuracy_at_05": rates5["accuracy"],
        "n_images": int(labels.size),
        "n_positives": int(labels.sum()),
    })
    return out


def _binary_gt(mask, gt_threshold):
    return np.asarray(mask, dtype=np.float64) > gt_threshold


def pixel_metrics(masks, seg_probs, threshold=0.5, gt_threshold=0.5):
    """Pixel-level metrics at the segmentation output's 1/8 resolution.

    Ground truth is the soft 1/8 target binarised with ``mask > gt_threshold``
    (default 0.5: a cell counts as defective when the defect covers most of its
    pooling window - the same cut as ``prob > threshold`` for a model trained
    with BCE on those soft targets). Predictions are ``prob >= threshold``.
    Images whose mask is ``None`` (no pixel labels) are skipped.

    Returns ``dice`` and ``iou`` pooled over all pixels of all evaluated images
    (so false alarms on defect-free images count), ``dice_per_image`` and
    ``iou_per_image`` (mean over images with a non-empty ground truth; ``nan``
    if none), ``pixel_auroc`` (``nan`` if one class), ``threshold``,
    ``gt_threshold``, ``n_images``, ``n_images_with_defect``, ``n_pixels``,
    ``n_positive_pixels``.

    Example:
    >>> gt = np.array([[0.0, 0.9], [0.0, 0.6]])
    >>> pr = np.array([[0.1, 0.8], [0.7, 0.4]])
    >>> m = pixel_metrics([gt], [pr])
    >>> m["dice"], m["iou"], m["pixel_auroc"]
    (0.5, 0.3333333333333333, 0.75)
    """
    if len(masks) != len(seg_probs):
        raise ValueError(f"{len(masks)} masks but {len(seg_probs)} segmentation maps")
    gts, preds, probs, per_dice, per_iou = [], [], [], [], []
    for mask, prob in zip(masks, seg_probs):
        if mask is None:
            continue
        gt = _binary_gt(mask, gt_threshold)
        prob = np.asarray(prob, dtype=np.float64)
        if gt.shape != prob.shape:
            raise ValueError(
                f"mask shape {gt.shape} differs from segmentation shape {prob.shape}; "
                "pass the 1/8-resolution targets"
            )
        pred = prob >= threshold
        gts.append(gt.ravel())
        preds.append(pred.ravel())
        probs.append(prob.ravel())
        if gt.any():
            inter, union = np.sum(gt & pred), np.sum(gt | pred)
            per_dice.append(2.0 * inter / (gt.sum() + pred.sum()))
            per_iou.append(inter / union)
    out = {"threshold": float(threshold), "gt_threshold": float(gt_threshold)}
    if not gts:
        return out | {
            "dice": math.nan, "iou": math.nan, "dice_per_image": math.nan,
            "iou_per_image": math.nan, "pixel_auroc": math.nan, "n_images": 0,
            "n_images_with_defect": 0, "n_pixels": 0, "n_positive_pixels": 0,
        }
    gt, pred, prob = np.concatenate(gts), np.concatenate(preds), np.concatenate(probs)
    inter, union, total = np.sum(gt & pred), np.sum(gt | pred), gt.sum() + pred.sum()
    one_class = gt.all() or not gt.any()
    return out | {
        # Nothing to find and nothing predicted is a perfect segmentation.
        "dice": float(2.0 * inter / total) if total else 1.0,
        "iou": float(inter / union) if union else 1.0,
        "dice_per_image": float(np.mean(per_dice)) if per_dice else math.nan,
        "iou_per_image": float(np.mean(per_iou)) if per_iou else math.nan,
        "pixel_auroc": math.nan if one_class else float(roc_auc_score(gt, prob)),
        "n_images": len(gts),
        "n_images_with_defect": len(per_dice),
        "n_pixels": int(gt.size),
        "n_positive_pixels": int(gt.sum()),
    }


def _join(parts):
    """Mean of AP/AUC, sum of counts, rates recomputed from the summed counts."""
    if not parts:
        raise ValueError("nothing to join (no folds or classes)")
    out = {key: float(np.mean([p[key] for p in parts])) for key in MEAN_KEYS}
    out.update({key: int(sum(p[key] for p in parts)) for key in COUNT_KEYS})
    out.update(_rates(out["tp"], out["tn"], out["fp"], out["fn"]))
    out["thresholds"] = [float(p["threshold"]) for p in parts]
    # Display only: every part was decided at its own threshold.
    out["threshold"] = float(np.mean(out["thresholds"]))
    out["threshold_at_fn0"] = float(np.nanmean([p["threshold_at_fn0"] for p in parts])) \
        if any(not math.isnan(p["threshold_at_fn0"]) for p in parts) else math.nan
    return out


def join_folds(fold_metrics):
    """Join per-fold ``image_metrics`` the KSDD way (``join_folds_results.py``).

    ``ap``, ``ap_trapezoid``, ``auc``: mean over folds (per-fold AP, not pooled;
    ``nan`` if any fold's is). ``tp``, ``tn``, ``fp``, ``fn``, ``fp_at_05``,
    ``fn_at_05``, ``fp_at_fn0``, ``n_images``, ``n_positives``: sums, each fold
    at its own threshold. ``f_measure``, ``tpr``, ``tnr``, ``accuracy``: from the
    summed counts. ``thresholds``: per fold; ``threshold`` and
    ``threshold_at_fn0``: their means, for display only. ``folds``: the inputs.

    Example:
    >>> a = image_metrics([0, 1], [0.2, 0.9]); b = image_metrics([0, 1, 0], [0.6, 0.5, 0.1])
    >>> j = join_folds([a, b])
    >>> j["ap"], j["fp"], j["fn"], j["n_images"], len(j["folds"])
    (0.75, 1, 0, 5, 2)
    """
    fold_metrics = list(fold_metrics)
    return _join(fold_metrics) | {"folds": fold_metrics}


def join_classes(class_metrics):
    """Join DAGM per-class ``image_metrics`` (``dagm_join``): same rule as ``join_folds``.

    Takes ``{class_name: metrics}``; AP/AUC are the mean over classes, counts the
    sums, each class decided at its own threshold. The per-class dicts are kept
    under ``classes``.

    Example:
    >>> a = image_metrics([0, 1], [0.2, 0.9]); b = image_metrics([0, 1], [0.1, 0.8])
    >>> j = join_classes({"Class1": a, "Class2": b})
    >>> j["ap"], j["fp"] + j["fn"], sorted(j["classes"])
    (1.0, 0, ['Class1', 'Class2'])
    """
    class_metrics = dict(class_metrics)
    return _join(list(class_metrics.values())) | {"classes": class_metrics}
