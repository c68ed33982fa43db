"""Metrics against hand-computed cases (REFERENCE.md §6)."""

import json
import math
import warnings

import numpy as np
import pytest
from sklearn.metrics import precision_recall_curve

from kdefect.metrics import (
    best_f_threshold,
    confusion,
    image_metrics,
    join_classes,
    join_folds,
    pixel_metrics,
)


def test_separable_case():
    m = image_metrics([0, 0, 1, 1], [0.1, 0.2, 0.6, 0.8])
    assert m["ap"] == m["ap_trapezoid"] == m["auc"] == 1.0
    # Best curve point is 0.6; the midpoint with the next lower threshold 0.2 is 0.4.
    assert m["threshold"] == pytest.approx(0.4)
    assert (m["tp"], m["tn"], m["fp"], m["fn"]) == (2, 2, 0, 0)
    assert m["tpr"] == m["tnr"] == m["accuracy"] == 1.0
    assert m["f_measure"] == pytest.approx(1.0)
    assert m["fp_at_fn0"] == 0 and m["threshold_at_fn0"] == 0.6
    assert (m["fp_at_05"], m["fn_at_05"]) == (0, 0)
    assert (m["n_images"], m["n_positives"]) == (4, 2)


def test_hand_computed_overlap():
    # Descending: 0.9 P, 0.7 N, 0.6 P, 0.1 N.
    m = image_metrics([0, 0, 1, 1], [0.1, 0.7, 0.6, 0.9])
    # Step-wise AP = 0.5 * 1 + 0.5 * 2/3.
    assert m["ap"] == pytest.approx(0.5 + 1 / 3)
    # Trapezoid over (R, P): (0,1) (.5,1) (.5,.5) (1,2/3) (1,.5).
    assert m["ap_trapezoid"] == pytest.approx(0.5 * 1 + 0.5 * (0.5 + 2 / 3) / 2)
    assert m["auc"] == pytest.approx(0.75)
    # F: thr .9 -> 2/3, .7 -> 1/2, .6 -> 0.8 (best), .1 -> 2/3. Midpoint (0.6 + 0.1) / 2.
    assert m["threshold"] == pytest.approx(0.35)
    assert (m["tp"], m["tn"], m["fp"], m["fn"]) == (2, 1, 1, 0)
    assert m["f_measure"] == pytest.approx(0.8)
    assert m["tpr"] == 1.0 and m["tnr"] == 0.5 and m["accuracy"] == 0.75
    assert m["fp_at_fn0"] == 1 and m["threshold_at_fn0"] == 0.6
    # At 0.5: flagged .9 .7 .6 -> one FP, no FN.
    assert (m["fp_at_05"], m["fn_at_05"]) == (1, 0)


def test_ties_between_positive_and_negative():
    labels = [1, 0, 1, 0]
    scores = [0.8, 0.8, 0.3, 0.3]
    m = image_metrics(labels, scores)
    # Curve points: >=.8 -> P .5 R .5; >=.3 -> P .5 R 1.
    assert m["ap"] == pytest.approx(0.5 * 0.5 + 0.5 * 0.5)
    assert m["ap_trapezoid"] == pytest.approx(0.5 * (1 + 0.5) / 2 + 0.5 * 0.5)
    assert m["auc"] == pytest.approx(0.5)  # tied pairs count one half
    # Best F is at the lowest score: that score itself is the threshold.
    assert m["threshold"] == 0.3
    assert (m["tp"], m["fp"], m["fn"]) == (2, 2, 0)
    assert m["fp_at_fn0"] == 2


def test_fp_at_fn0_counts_ties_with_lowest_positive():
    labels = [1, 1, 0, 0, 0]
    scores = [0.9, 0.4, 0.4, 0.2, 0.95]
    m = image_metrics(labels, scores)
    assert m["threshold_at_fn0"] == 0.4
    assert m["fp_at_fn0"] == 2  # 0.4 (tie) and 0.95


def test_fp_at_fn0_where_sklearn_no_longer_truncates():
    labels = [1, 1, 0]
    scores = [0.9, 0.8, 0.5]
    precision, recall, thresholds = precision_recall_curve(labels, scores)
    reference_thr = thresholds[recall[:-1] >= 1][0]
    # Current scikit-learn keeps the full-recall point at the minimum score, so the
    # reference rule picks 0.5 and would count the negative as an FP.
    assert reference_thr == 0.5
    m = image_metrics(labels, scores)
    assert m["threshold_at_fn0"] == 0.8
    assert m["fp_at_fn0"] == 0


def test_given_threshold_is_used():
    m = image_metrics([0, 0, 1, 1], [0.1, 0.7, 0.6, 0.9], threshold=0.65)
    assert m["threshold"] == 0.65
    assert (m["tp"], m["tn"], m["fp"], m["fn"]) == (1, 1, 1, 1)
    assert m["accuracy"] == 0.5


def test_score_equal_to_threshold_is_positive():
    assert confusion([0, 1], [0.5, 0.5], 0.5) == (1, 0, 1, 0)
    m = image_metrics([0, 1], [0.5, 0.5])
    assert (m["fp_at_05"], m["fn_at_05"]) == (1, 0)


@pytest.mark.parametrize("seed", range(5))
def test_threshold_reaches_the_best_f_of_the_curve(seed):
    rng = np.random.default_rng(seed)
    labels = rng.random(60) < 0.3
    labels[:2] = [True, False]
    scores = np.round(np.clip(rng.normal(0.3 + 0.4 * labels, 0.2), 0, 1), 2)  # rounding -> ties
    precision, recall, _ = precision_recall_curve(labels, scores)
    best_f = np.max(2 * precision * recall / (precision + recall + 1e-8))
    m = image_metrics(labels, scores)
    assert m["f_measure"] == pytest.approx(best_f, abs=1e-6)
    assert m["tp"] + m["tn"] + m["fp"] + m["fn"] == 60


def test_all_one_class_is_nan_not_an_error():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        neg = image_metrics([0, 0, 0], [0.1, 0.9, 0.4])
        pos = image_metrics([1, 1], [0.2, 0.3])
    assert math.isnan(neg["ap"]) and math.isnan(neg["auc"]) and math.isnan(neg["ap_trapezoid"])
    assert neg["threshold"] > 0.9 and neg["fp"] == 0 and neg["tn"] == 3
    assert neg["fp_at_fn0"] == 0 and math.isnan(neg["threshold_at_fn0"])
    assert math.isnan(pos["ap"]) and math.isnan(pos["auc"])
    assert pos["threshold"] == 0.2 and pos["fn"] == 0 and pos["tp"] == 2
    assert pos["fp_at_fn0"] == 0 and pos["threshold_at_fn0"] == 0.2


def test_bad_input_raises():
    with pytest.raises(ValueError, match="empty"):
        image_metrics([], [])
    with pytest.raises(ValueError, match="length"):
        image_metrics([0, 1], [0.5])
    with pytest.raises(ValueError, match="NaN"):
        image_metrics([0, 1], [0.5, np.nan])


def test_results_are_json_serialisable():
    m = image_metrics(np.array([0, 1, 1]), np.array([0.2, 0.8, 0.7], np.float32))
    text = json.dumps(m)
    assert json.loads(text)["n_images"] == 3
    assert all(isinstance(v, (int, float)) for v in m.values())


def test_best_f_threshold_single_score_level():
    assert best_f_threshold([0, 1, 1], [0.5, 0.5, 0.5]) == 0.5


def test_join_folds():
    a = image_metrics([0, 0, 1], [0.1, 0.2, 0.9])  # AP 1, no errors
    b = image_metrics([0, 1, 0, 1], [0.6, 0.5, 0.1, 0.9])  # one FP at best F
    c = image_metrics([0, 1], [0.3, 0.7], threshold=0.8)  # forced FN
    j = join_folds([a, b, c])
    assert j["ap"] == pytest.approx((a["ap"] + b["ap"] + c["ap"]) / 3)
    assert j["auc"] == pytest.approx((a["auc"] + b["auc"] + c["auc"]) / 3)
    assert j["ap_trapezoid"] == pytest.approx(np.mean([a["ap_trapezoid"], b["ap_trapezoid"], 1.0]))
    assert (j["fp"], j["fn"]) == (b["fp"] + 0, 1)
    assert (j["n_images"], j["n_positives"]) == (9, 4)
    assert j["fp_at_fn0"] == a["fp_at_fn0"] + b["fp_at_fn0"] + c["fp_at_fn0"]
    assert j["fp_at_05"] == 1 and j["fn_at_05"] == 0
    assert j["tp"] + j["tn"] + j["fp"] + j["fn"] == 9
    assert j["thresholds"] == [a["threshold"], b["threshold"], 0.8]
    assert j["threshold"] == pytest.approx(np.mean(j["thresholds"]))
    assert j["folds"] == [a, b, c]
    assert j["accuracy"] == pytest.approx((j["tp"] + j["tn"]) / 9)
    json.dumps(j)


def test_join_classes_keeps_names():
    per_class = {f"Class{i}": image_metrics([0, 1], [0.1, 0.9]) for i in (1, 2)}
    j = join_classes(per_class)
    assert j["ap"] == 1.0 and j["fp"] == j["fn"] == 0
    assert list(j["classes"]) == ["Class1", "Class2"]
    with pytest.raises(ValueError):
        join_folds([])


def test_pixel_metrics_hand_case():
    gt1 = np.array([[0.0, 0.9], [0.3, 0.6]])  # 0.3 is below the GT cut
    pr1 = np.array([[0.1, 0.8], [0.7, 0.4]])
    gt2 = np.zeros((2, 2))  # defect-free image with one false alarm
    pr2 = np.array([[0.6, 0.0], [0.0, 0.0]])
    m = pixel_metrics([gt1, None, gt2], [pr1, np.ones((2, 2)), pr2])
    # Pooled: GT {(0,1),(1,1)}; predicted {(0,1),(1,0)} + {(0,0) of image 2}: inter 1.
    assert m["dice"] == pytest.approx(2 * 1 / (2 + 3))
    assert m["iou"] == pytest.approx(1 / 4)
    # Per image (only image 1 has a defect): dice 2/4, IoU 1/3.
    assert m["dice_per_image"] == pytest.approx(0.5)
    assert m["iou_per_image"] == pytest.approx(1 / 3)
    # AUROC: positives {.8, .4} vs negatives {.1, .7, .6, 0, 0, 0}: .8 beats 6, .4 beats 4.
    assert m["pixel_auroc"] == pytest.approx(10 / 12)
    assert (m["n_images"], m["n_images_with_defect"], m["n_pixels"], m["n_positive_pixels"]) == (2, 1, 8, 2)


def test_pixel_metrics_edge_cases():
    empty = pixel_metrics([None], [np.zeros((2, 2))])
    assert empty["n_images"] == 0 and math.isnan(empty["dice"])
    clean = pixel_metrics([np.zeros((3, 3))], [np.zeros((3, 3))])
    assert clean["dice"] == 1.0 and clean["iou"] == 1.0
    assert math.isnan(clean["pixel_auroc"]) and math.isnan(clean["dice_per_image"])
    with pytest.raises(ValueError, match="shape"):
        pixel_metrics([np.zeros((4, 4))], [np.zeros((2, 2))])
    with pytest.raises(ValueError, match="masks"):
        pixel_metrics([np.zeros((2, 2))], [])
