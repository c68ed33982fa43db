"""Figures and reports: files exist, are not blank, and report.html links only existing images."""

import csv
import doctest
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote

import numpy as np
import pytest
from matplotlib.image import imread
from matplotlib.text import Text

import kdefect.metrics
import kdefect.reports
from kdefect.data.labels import LabelConfig, distance_weights, downsize
from kdefect.data.synthetic import make_surface
from kdefect.metrics import image_metrics
from kdefect.reports import (ap_axis_limits, plot_experiment, plot_history, plot_pr_roc, plot_sample,
                             label_levels, plot_scores, write_report)


def _assert_not_blank(png, min_std=0.03):
    pixels = imread(png)[..., :3]
    assert pixels.std() > min_std, f"{png} looks blank (std {pixels.std():.4f})"
    assert len(np.unique(pixels.reshape(-1, 3), axis=0)) > 20
    assert Path(png).stat().st_size < 600_000
    return pixels


def test_docstring_examples():
    for module in (kdefect.metrics, kdefect.reports):
        result = doctest.testmod(module)
        assert result.attempted > 0 and result.failed == 0, module.__name__


def test_plot_pr_roc(tmp_path):
    rng = np.random.default_rng(0)
    labels = rng.random(40) < 0.4
    scores = np.clip(rng.normal(0.3 + 0.4 * labels, 0.2), 0, 1)
    pr, roc = plot_pr_roc(labels, scores, tmp_path)
    assert pr == tmp_path / "precision-recall.png" and roc == tmp_path / "roc.png"
    _assert_not_blank(pr)
    _assert_not_blank(roc)
    # One class only: no crash, still a figure.
    pr1, roc1 = plot_pr_roc([0, 0, 0], [0.1, 0.2, 0.3], tmp_path / "one")
    assert pr1.is_file() and roc1.is_file()


def test_plot_scores(tmp_path):
    rng = np.random.default_rng(1)
    labels = rng.random(60) < 0.3
    scores = np.clip(rng.normal(0.2 + 0.6 * labels, 0.2), 0, 1)  # includes exact 0s and 1s
    scores[:2] = [0.0, 1.0]
    names = [f"img{i}" for i in range(60)]
    png = plot_scores(labels, scores, tmp_path / "sub" / "scores.png", names=names)
    assert png == tmp_path / "sub" / "scores.png"
    pixels = _assert_not_blank(png)
    # Misclassified images are drawn in red (FP) or orange (FN); this data has some of each.
    m = image_metrics(labels, scores)
    assert m["fp"] > 0 and m["fn"] > 0
    red = (pixels[..., 0] > 0.7) & (pixels[..., 1] < 0.4) & (pixels[..., 2] < 0.4)
    assert red.sum() > 20
    # A perfectly separated set has no red; one class only still draws.
    clean = plot_scores([0, 0, 1, 1], [0.01, 0.2, 0.8, 0.999], tmp_path / "clean.png")
    clean_px = imread(clean)[..., :3]
    assert ((clean_px[..., 0] > 0.7) & (clean_px[..., 1] < 0.4) & (clean_px[..., 2] < 0.4)).sum() == 0
    assert plot_scores([0, 0, 0], [0.1, 0.2, 0.3], tmp_path / "one.png").is_file()
    with pytest.raises(ValueError, match="names and scores differ"):
        plot_scores([0, 1], [0.1, 0.9], tmp_path / "x.png", names=["a"])
    with pytest.raises(ValueError, match="differ in length"):
        plot_scores([0, 1, 1], [0.1, 0.9], tmp_path / "x.png")
    assert not (tmp_path / "x.png").exists()


def test_label_levels():
    assert label_levels([], []) == []
    assert label_levels([0, 30, 60], [20, 50, 80]) == [0, 0, 0]  # apart: one level
    assert label_levels([0, 1, 2], [10, 11, 12]) == [0, 1, 2]  # all overlap: one level each
    assert label_levels([50, 0, 25], [70, 20, 45]) == [0, 0, 0]  # order of the input does not matter
    assert label_levels([0, 21], [20, 40], gap=2) == [0, 1]  # closer than the gap counts as overlap


def test_plot_scores_names_do_not_overlap(tmp_path, monkeypatch):
    # Seven misses with the same score (the names would sit on each other) and four close false positives.
    labels = [0] * 30 + [1] * 8
    scores = list(np.linspace(0.01, 0.3, 26)) + [0.6, 0.62, 0.64, 0.66] + [0.05] * 7 + [0.95]
    figures = []
    real_save = kdefect.reports._save
    monkeypatch.setattr(kdefect.reports, "_save", lambda fig, out: figures.append(fig) or real_save(fig, out))
    plot_scores(labels, scores, tmp_path / "s.png", threshold=0.5, names=[f"kos{i:02d}_Part{i % 8}" for i in range(38)])
    fig = figures[0]
    renderer = fig.canvas.get_renderer()
    texts = [t for t in fig.axes[0].texts if t.get_text().startswith("kos")]
    assert len(texts) == 10  # 6 misses (MAX_NAMED) + 4 false positives
    boxes = [Text.get_window_extent(t, renderer) for t in texts]  # the text alone, without its line
    for i, a in enumerate(boxes):
        assert fig.bbox.contains(a.x0, a.y0) and fig.bbox.contains(a.x1, a.y1), texts[i].get_text()
        for b in boxes[i + 1:]:
            assert not a.overlaps(b), (a, b)


def test_plot_history_from_dict_and_csv(tmp_path):
    n = 10
    hist = {
        "loss": list(np.linspace(1.0, 0.2, n)),
        "seg_loss": list(np.linspace(0.7, 0.1, n)),
        "cls_loss": list(np.linspace(0.7, 0.05, n)),
        "lambda": [1 - e / n for e in range(n)],
    }
    _assert_not_blank(plot_history(hist, tmp_path / "h1.png"))

    path = tmp_path / "history.csv"
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["epoch", "loss", "seg_loss", "cls_loss", "lambda", "val_ap"])
        for e in range(n):
            val = f"{0.5 + 0.05 * e:.3f}" if e % 3 == 0 else ""  # validation every 3 epochs
            writer.writerow([e, hist["loss"][e], hist["seg_loss"][e], hist["cls_loss"][e], hist["lambda"][e], val])
    _assert_not_blank(plot_history(path, tmp_path / "h2.png"))
    assert plot_history({}, tmp_path / "empty.png").is_file()


def _sample(seed, height=64, width=64, kind="spot"):
    image, mask = make_surface(np.random.default_rng(seed), height, width, kind=kind)
    target = downsize(mask.astype(np.float32))
    weight = downsize(distance_weights(mask, LabelConfig(weight_p=2.0, weight_max=3.0)))
    prob = np.clip(target * 0.9 + 0.05, 0, 1)
    return image, target, weight, prob


def test_plot_sample_square_with_weights(tmp_path):
    image, target, weight, prob = _sample(1)
    out = plot_sample(image, target, prob, 0.93, tmp_path / "s.png", weight=weight, title="img_001 (defect)")
    pixels = _assert_not_blank(out)
    height, width = pixels.shape[:2]
    assert width > 3 * height  # four panels side by side


def test_plot_sample_wide_is_transposed_and_rgb_full_res_mask(tmp_path):
    image, mask = make_surface(np.random.default_rng(2), 32, 256, channels=3, kind="scratch")
    prob = downsize(mask.astype(np.float32))
    out = plot_sample(image, mask, prob, 0.4, tmp_path / "wide.png")
    pixels = _assert_not_blank(out)
    height, width = pixels.shape[:2]
    assert height > width / 3  # three portrait panels, not one long strip
    no_mask = plot_sample(image, None, prob, 0.4, tmp_path / "nomask.png")
    assert no_mask.is_file()
    with pytest.raises(ValueError, match="image"):
        plot_sample(np.zeros((2, 2, 2, 2)), None, prob, 0.1, tmp_path / "bad.png")


class _Collector(HTMLParser):
    def __init__(self):
        super().__init__()
        self.sources, self.links, self.cards = [], [], []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "img":
            self.sources.append(attrs["src"])
        if tag == "a":
            self.links.append(attrs["href"])
        if tag == "div" and "card" in attrs.get("class", "").split():
            self.cards.append(attrs["class"].split()[1])


def _run_dir(tmp_path):
    """A small run directory: 6 test images, one FP, one FN, one without a figure."""
    labels = [1, 1, 0, 0, 1, 0]
    scores = [0.95, 0.30, 0.80, 0.10, 0.70, 0.20]
    metrics = image_metrics(labels, scores, threshold=0.5)
    plot_pr_roc(labels, scores, tmp_path)
    plot_history({"loss": [1.0, 0.5], "lambda": [1.0, 0.5]}, tmp_path / "history.png")
    results = []
    for i, (label, score) in enumerate(zip(labels, scores)):
        image, target, weight, prob = _sample(10 + i, kind="crack" if label else None)
        figure = None
        if i != 5:
            figure = f"test_outputs/{i:02d} img.png"  # a space: links must be URL-encoded
            plot_sample(image, target, prob * score, score, tmp_path / figure, title=f"img{i}")
        results.append({"image": f"img{i}.png", "score": score, "ground_truth": label,
                        "decision": score >= 0.5, "figure": figure})
    results[3]["figure"] = "test_outputs/missing.png"  # a dangling path must not be linked
    return metrics, results


@pytest.mark.parametrize("embed", [False, True])
def test_write_report(tmp_path, embed):
    metrics, results = _run_dir(tmp_path)
    md, page = write_report(tmp_path, metrics, results, {"dataset": "synthetic", "name": "t"}, embed=embed)
    parser = _Collector()
    parser.feed(page.read_text(encoding="utf-8"))
    parser.close()

    assert len(parser.sources) == 3 + 4  # PR, ROC, history + four existing figures
    for src in parser.sources + parser.links:
        if src.startswith("data:image/png;base64,") or src.startswith("#"):
            continue
        assert (tmp_path / unquote(src)).is_file(), src
    assert any(s.startswith("data:") for s in parser.sources)  # curves always embedded
    if embed:
        assert all(s.startswith("data:") for s in parser.sources)

    # Sorted by score: .95 TP, .80 FP, .70 TP, .30 FN, .20 TN, .10 TN.
    assert parser.cards == ["TP", "FP", "TP", "FN", "TN", "TN"]
    text = page.read_text(encoding="utf-8")
    assert "FALSE POSITIVE" in text and "FALSE NEGATIVE" in text

    report = md.read_text(encoding="utf-8")
    assert "AP" in report and "FP 1" in report and "FN 1" in report and "threshold 0.5" in report
    for target in [part.split(")")[0] for part in report.split("](")[1:]]:
        assert (tmp_path / unquote(target)).is_file(), target
    assert "- FP: `img2.png`" in report and "- FN: `img1.png`" in report


def test_write_report_for_joined_folds(tmp_path):
    folds = [image_metrics([0, 1, 1], [0.1, 0.8, 0.9]), image_metrics([0, 1], [0.6, 0.4])]
    joined = kdefect.metrics.join_folds(folds)
    md, page = write_report(tmp_path, joined, [], {})
    assert "fold 1" in md.read_text() and "fold 1" in page.read_text()


def test_plot_experiment_axis_zooms_to_the_values(tmp_path):
    """Ablation rows differ by fractions of a point: the AP axis must not start at 0."""
    left, right = ap_axis_limits([98.41, 99.21, None, 99.75, 100.0])
    assert 97.5 < left < 98.41 and right > 100.0
    left, _ = ap_axis_limits([46.13, 96.71])
    assert 30.0 < left < 46.13
    assert ap_axis_limits([None]) == (0.0, 135.0)
    png = plot_experiment(["all on", "DB off"], [99.21, None], [100.0, 99.75], "Table III", tmp_path / "s.png")
    assert imread(png).shape[0] > 100
