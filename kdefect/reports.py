"""Figures and reports for a run directory (REFERENCE.md §6.5, issue 4).

* ``plot_pr_roc``: precision-recall and ROC curves (PNG).
* ``plot_scores``: every test image's score by class, on a logit axis, with the
  threshold and the misclassified images named: the margin between the classes.
* ``plot_history``: train losses per epoch with λ and validation AP on a twin axis.
* ``plot_sample``: one test image - input, ground truth, loss weights (optional)
  and the segmentation heat-map over the image, score in the title.
* ``write_report``: ``report.md`` and a self-contained ``report.html`` (metrics
  table, curves, gallery sorted by score with false positives/negatives marked).

Figures are drawn on ``matplotlib.figure.Figure`` objects with the Agg canvas,
never through ``pyplot``, so no global backend is touched and nothing leaks.
"""

import base64
import csv
import html
import json
import math
import os
from pathlib import Path
from urllib.parse import quote

import numpy as np

DPI = 100
PR_PNG = "precision-recall.png"
ROC_PNG = "roc.png"
SCORES_PNG = "scores.png"
HISTORY_PNG = "history.png"
CURVE_PNGS = (PR_PNG, ROC_PNG, SCORES_PNG, HISTORY_PNG)  # shown in the reports, in this order
# Embed gallery figures in report.html up to this many bytes in total; link them beyond.
EMBED_LIMIT = 8 * 2**20  # above this, gallery figures are linked (relative paths) to keep the page light


def _figure(width, height):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=DPI)
    FigureCanvasAgg(fig)
    return fig


def _save(fig, out_png):
    out_png = Path(out_png)
    out_png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_png, dpi=DPI, format="png")
    return out_png


def _curve_png(out_png, draw, fallback_title, xlabel, ylabel, xlim, diagonal=False):
    """One 5×4.5 in curve panel: ``draw(ax)`` plots and returns the title; ``draw=None`` means undefined."""
    fig = _figure(5, 4.5)
    ax = fig.add_subplot()
    if diagonal:
        ax.plot([0, 1], [0, 1], "--", color="grey", lw=1)
    if draw is not None:
        ax.set_title(draw(ax))
    else:
        ax.text(0.5, 0.5, "undefined: one class only", ha="center", va="center")
        ax.set_title(fallback_title)
    ax.set(xlabel=xlabel, ylabel=ylabel, xlim=xlim, ylim=(0, 1.02))
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return _save(fig, out_png)


def plot_pr_roc(labels, scores, out_dir):
    """Write ``precision-recall.png`` and ``roc.png`` into ``out_dir``; return both paths.

    The PR curve marks the max-F operating point of ``kdefect.metrics``. With
    only one class present the curves are undefined and the figures say so.

    Example:
    >>> import tempfile
    >>> pr, roc = plot_pr_roc([0, 0, 1, 1], [0.1, 0.7, 0.6, 0.9], tempfile.mkdtemp())
    >>> pr.name, roc.name
    ('precision-recall.png', 'roc.png')
    """
    from sklearn.metrics import precision_recall_curve, roc_curve

    from kdefect.metrics import image_metrics

    labels = np.asarray(labels).astype(bool).reshape(-1)
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    m = image_metrics(labels, scores)
    out_dir = Path(out_dir)
    two_classes = labels.any() and not labels.all()

    def draw_pr(ax):
        precision, recall, _ = precision_recall_curve(labels, scores)
        ax.step(recall, precision, where="post", color="tab:blue", lw=2)
        ax.fill_between(recall, precision, step="post", alpha=0.15, color="tab:blue")
        p = m["tp"] / max(m["tp"] + m["fp"], 1)
        ax.plot([m["tpr"]], [p], "o", color="tab:red",
                label=f"max F = {m['f_measure']:.3f} at {m['threshold']:.3g}")
        ax.legend(loc="lower left")
        return f"AP {100 * m['ap']:.2f} % (trapezoid {100 * m['ap_trapezoid']:.2f} %)"

    def draw_roc(ax):
        fpr, tpr, _ = roc_curve(labels, scores)
        ax.plot(fpr, tpr, color="tab:orange", lw=2)
        return f"ROC AUC {100 * m['auc']:.2f} %"

    pr_png = _curve_png(out_dir / PR_PNG, draw_pr if two_classes else None, "precision-recall",
                        xlabel="recall", ylabel="precision", xlim=(0, 1.01))
    roc_png = _curve_png(out_dir / ROC_PNG, draw_roc if two_classes else None, "ROC", diagonal=True,
                         xlabel="false positive rate", ylabel="true positive rate", xlim=(0, 1))
    return pr_png, roc_png


def label_levels(lefts, rights, gap=2.0):
    """Stack labels on the fewest levels so that no two on one level overlap; return each one's level.

    ``lefts`` and ``rights`` are the labels' horizontal extents (any unit, e.g.
    points on the page). Greedy, in order of the left edge: each label takes
    the lowest level whose last label ends ``gap`` before it starts.

    Example:
    >>> label_levels([0, 5, 30], [20, 25, 50])
    [0, 1, 0]
    """
    ends, levels = [], [0] * len(lefts)  # ends[k]: right edge of the last label on level k
    for i in np.argsort(lefts, kind="stable"):
        level = next((k for k, end in enumerate(ends) if end + gap <= lefts[i]), len(ends))
        if level == len(ends):
            ends.append(rights[i])
        else:
            ends[level] = rights[i]
        levels[i] = level
    return levels


LABEL_FONT = 7  # points; the names of misclassified images in plot_scores
LABEL_STEP = 8  # points between stacked names
LABEL_PAD = 3  # points between a point (or its row) and its name


def _to_points(fig):
    """Page points per display pixel of ``fig``."""
    return 72.0 / fig.dpi


def _label_extents(ax, names, xs):
    """The horizontal extents, in points on the page, of names written just right of ``xs``."""
    lefts = ax.transData.transform(np.column_stack([xs, np.zeros(len(xs))]))[:, 0] * _to_points(ax.figure) + LABEL_PAD
    return lefts, lefts + np.array([0.6 * LABEL_FONT * len(n) for n in names])  # rough text width


def _name_points(ax, names, xs, ys, top, levels, color):
    """Write ``names`` above height ``top`` (data units) on the given levels; a thin line joins name and point."""
    to_points = _to_points(ax.figure)
    base = ax.transData.transform([[xs[0], top]])[0, 1] * to_points + LABEL_PAD
    at = ax.transData.transform(np.column_stack([xs, ys]))[:, 1] * to_points
    for name, x, y, py, level in zip(names, xs, ys, at, levels):
        ax.annotate(name, (x, y), xytext=(LABEL_PAD, base + LABEL_STEP * level - py), textcoords="offset points",
                    fontsize=LABEL_FONT, color=color, va="bottom",
                    arrowprops=dict(arrowstyle="-", lw=0.5, color=color, alpha=0.6, shrinkA=0, shrinkB=2))


SCORE_CLIP = 1e-4  # scores are drawn in [SCORE_CLIP, 1 - SCORE_CLIP]: the logit axis cannot show 0 or 1
JITTER = 0.18  # vertical spread of the points around their row in plot_scores (data units)
MAX_NAMED = 6  # name at most this many misclassified images per class in plot_scores


def plot_scores(labels, scores, out_png, threshold=None, names=None):
    """Draw every image's score, defect-free and defective on two rows; return ``out_png``.

    The score axis is logit-scaled, so well-separated scores near 0 and 1 stay
    readable; the dashed line is the decision threshold (default: the max-F
    threshold of ``kdefect.metrics``), and false positives / negatives are drawn
    in red / orange and, when ``names`` is given, the worst few of each are
    named, the names stacked above their row where they would overlap. The title gives the
    *margin*: the lowest defect score minus the highest defect-free one
    (positive means every defect outranks every defect-free image, AP 100 %).

    Example:
    >>> import tempfile, pathlib
    >>> png = plot_scores([0, 0, 1, 1], [0.1, 0.7, 0.6, 0.9], pathlib.Path(tempfile.mkdtemp()) / "s.png")
    >>> png.name
    's.png'
    """
    from kdefect.metrics import _as_arrays, image_metrics

    labels, scores = _as_arrays(labels, scores)
    if names is not None and len(names) != scores.size:
        raise ValueError(f"names and scores differ in length: {len(names)} vs {scores.size}")
    if threshold is None:
        threshold = image_metrics(labels, scores)["threshold"]
    shown = np.clip(scores, SCORE_CLIP, 1 - SCORE_CLIP)
    decided = scores >= threshold
    jitter = np.random.default_rng(0).uniform(-JITTER, JITTER, scores.size)  # fixed: same figure every time

    fig = _figure(7, 3.2)
    ax = fig.add_subplot()
    kinds = [("TN", ~labels & ~decided, 0, "0.6"), ("FP", ~labels & decided, 0, "tab:red"),
             ("TP", labels & decided, 1, "tab:green"), ("FN", labels & ~decided, 1, "tab:orange")]
    for kind, mask, row, color in kinds:
        if mask.any():
            ax.scatter(shown[mask], row + jitter[mask], s=16, color=color, alpha=0.8,
                       label=f"{kind} ({int(mask.sum())})", zorder=3)
    ax.axvline(min(max(threshold, SCORE_CLIP), 1 - SCORE_CLIP), ls="--", color="k", lw=1,
               label=f"threshold {threshold:.3g}")
    ax.set_xscale("logit")
    ax.set_xlim(SCORE_CLIP / 2, 1 - SCORE_CLIP / 2)
    ax.set_ylim(-0.5, 1.5)
    ticks = [1e-4, 1e-3, 0.01, 0.1, 0.5, 0.9, 0.99, 0.999, 0.9999]
    ax.set_xticks(ticks, [f"{t:g}" for t in ticks])
    ax.minorticks_off()
    ax.set_yticks([0, 1], [f"defect-free ({int((~labels).sum())})", f"defective ({int(labels.sum())})"])
    ax.set_xlabel("image score (logit axis)")
    if labels.any() and not labels.all():
        margin = scores[labels].min() - scores[~labels].max()
        ax.set_title(f"margin (lowest defect − highest defect-free): {margin:+.3f}", fontsize=10)
    ax.grid(axis="x", alpha=0.3)
    ax.legend(loc="center left", bbox_to_anchor=(1.01, 0.5), fontsize=8, frameon=False)
    fig.tight_layout()  # the names are placed in points on the final page, so the layout comes first
    named = []  # (names, indices, levels, row, colour) of the misclassified images to name
    if names is not None:
        for kind, mask, row, color in kinds:
            if kind in ("FP", "FN") and mask.any():
                worst = np.flatnonzero(mask)[np.argsort(-scores[mask] if kind == "FP" else scores[mask])][:MAX_NAMED]
                texts = [str(names[i]) for i in worst]
                named.append((texts, worst, label_levels(*_label_extents(ax, texts, shown[worst])), row, color))
    # room above the defective row for its stacked names: solve top - (1 + JITTER) = need / points-per-unit
    need = max([LABEL_PAD + LABEL_STEP * max(lv) + LABEL_FONT + 4 for _, _, lv, row, _ in named if row == 1], default=0)
    height = ax.get_window_extent().height * _to_points(fig)
    ax.set_ylim(-0.5, max(1.5, (1 + JITTER + 0.5 * need / height) / (1 - need / height)))
    for texts, worst, levels, row, color in named:
        _name_points(ax, texts, shown[worst], row + jitter[worst], row + JITTER, levels, color)
    return _save(fig, out_png)


def ap_axis_limits(values):
    """The AP axis of :func:`plot_experiment`: from just below the lowest value to past 100.

    Leaves room right of 100 for the value labels; ``None`` values are ignored.

    Example:
    >>> ap_axis_limits([98.41, None, 100.0])
    (98.1715, 100.64)
    >>> ap_axis_limits([46.13, 96.71])[0] < 46.13
    True
    """
    values = [float(v) for v in values if v is not None]
    low = min(values, default=0.0)
    left = max(0.0, low - 0.15 * max(100.0 - low, 1.0))
    return round(left, 4), round(100.0 + 0.35 * (100.0 - left), 4)


def plot_experiment(labels, ours, paper, title, out_png):
    """Dot chart of an experiment's AP per row: ours beside the paper's; return the path.

    ``ours`` and ``paper`` are AP values in percent, ``None`` where missing
    (a row not run, or a number the paper does not give); each dot is labelled.
    The AP axis ends at 100 and starts just below the lowest value shown, so that
    differences of a fraction of a point stay visible (dots, not bars, because a
    bar on an axis that does not start at 0 would misstate its length).

    Example:
    >>> import tempfile, os
    >>> png = plot_experiment(["33 positives", "5 positives"], [99.2, None], [100.0, 96.71],
    ...                       "Table II", os.path.join(tempfile.mkdtemp(), "summary.png"))
    >>> png.name
    'summary.png'
    """
    n = len(labels)
    left, right = ap_axis_limits(list(ours) + list(paper))
    fig = _figure(7, 1.2 + 0.45 * n)
    ax = fig.add_subplot()
    y = np.arange(n)
    for offset, series, name, color, marker in ((-0.15, ours, "kdefect", "tab:blue", "o"),
                                                 (0.15, paper, "paper", "tab:grey", "s")):
        for yi, value in zip(y + offset, series):
            if value is None:
                if name == "kdefect":
                    ax.text(left + 0.01 * (right - left), yi, "not run", va="center", fontsize=8, color=color)
                continue
            ax.hlines(yi, left, float(value), color=color, alpha=0.25, linewidth=1)
            ax.plot(float(value), yi, marker, color=color, markersize=6)
            ax.text(float(value) + 0.02 * (right - left), yi, f"{value:.2f}", va="center", fontsize=8, color=color)
        ax.plot([], [], marker, color=color, label=name)
    ax.axvline(100.0, color="black", linewidth=0.6, alpha=0.5)
    ax.set_yticks(y, labels)
    ax.set_ylim(n - 0.5, -0.5)
    ax.set(xlabel="AP (%)", xlim=(left, right), title=title)
    ax.set_xticks([t for t in ax.get_xticks() if left <= t <= 100.0])
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, frameon=False)
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    return _save(fig, out_png)


def _read_history(history):
    """A history as ``{column: [floats]}`` from a CSV path or a mapping of lists."""
    if isinstance(history, (str, os.PathLike)):
        with open(history, newline="") as f:
            rows = list(csv.DictReader(f))
        columns = rows[0].keys() if rows else []
        history = {c: [r[c] for r in rows] for c in columns}

    def number(value):
        try:
            return float(value)
        except (TypeError, ValueError):
            return math.nan

    return {str(k): [number(v) for v in values] for k, values in dict(history).items()}


def _pick(columns, *names):
    for name in names:
        if name in columns:
            return name
    return None


def plot_history(history, out_png):
    """Plot train seg/cls/total loss per epoch, with λ and validation AP on a twin axis.

    ``history`` is a CSV path (Keras ``CSVLogger`` style, an ``epoch`` column
    optional) or a mapping such as ``keras.callbacks.History.history``. Losses
    are read from ``seg_loss``, ``cls_loss``, ``loss``; λ from ``lambda``;
    validation AP from ``val_ap`` (or ``val_AP``/``validation_ap``). Missing
    columns are skipped; NaN entries (epochs without validation) are gaps.
    Epochs are counted from 0 as in Keras and plotted as 1..N.

    Example:
    >>> import tempfile, os
    >>> h = {"loss": [0.9, 0.5], "seg_loss": [0.6, 0.3], "cls_loss": [0.7, 0.4], "lambda": [1.0, 0.5]}
    >>> out = plot_history(h, os.path.join(tempfile.mkdtemp(), "history.png"))
    >>> out.name
    'history.png'
    """
    from matplotlib.ticker import MaxNLocator

    h = _read_history(history)
    lengths = [len(v) for v in h.values()]
    n = max(lengths, default=0)
    epochs = h.get("epoch") or list(range(n))
    epochs = [e + 1 for e in epochs]  # Keras counts from 0; plot 1..N

    fig = _figure(7, 4.6)
    ax = fig.add_subplot()
    styles = (("seg_loss", "segmentation", "tab:blue"), ("cls_loss", "classification", "tab:orange"),
              ("loss", "total", "black"))
    for key, label, colour in styles:
        if key in h:
            ax.plot(epochs[: len(h[key])], h[key], color=colour, marker=".", label=f"{label} loss")
    ax.set(xlabel="epoch", ylabel="train loss")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(alpha=0.3)
    handles, labels = ax.get_legend_handles_labels()

    lam = _pick(h, "lambda", "lam")
    val = _pick(h, "val_ap", "val_AP", "validation_ap")
    if lam or val:
        twin = ax.twinx()
        if lam:
            twin.plot(epochs[: len(h[lam])], h[lam], "--", color="tab:green", label="λ (seg weight)")
        if val:
            ys = np.asarray(h[val], dtype=float)
            xs = np.asarray(epochs[: len(ys)])
            ok = np.isfinite(ys)
            twin.plot(xs[ok], ys[ok], "s-", color="tab:red", label="validation AP")
        twin.set(ylabel="λ / validation AP", ylim=(-0.02, 1.05))
        more_h, more_l = twin.get_legend_handles_labels()
        handles, labels = handles + more_h, labels + more_l
    if handles:
        ax.legend(handles, labels, loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=3, fontsize=8)
    else:
        ax.text(0.5, 0.5, "no loss history", ha="center", va="center", transform=ax.transAxes)
    ax.set_title("training history")
    fig.tight_layout()
    return _save(fig, out_png)


def _to_size(array, height, width):
    """Bilinear resize (half-pixel centres, like cv2 INTER_LINEAR) of a 2-D map."""
    from scipy import ndimage

    arr = np.asarray(array, dtype=np.float32)
    if arr.shape == (height, width):
        return arr
    zoom = (height / arr.shape[0], width / arr.shape[1])
    return ndimage.zoom(arr, zoom, order=1, mode="nearest", grid_mode=True)


def plot_sample(image, mask, seg_prob, score, out_png, weight=None, title=None):
    """Per-image figure: input | ground truth | [loss weights] | segmentation overlay.

    Args:
        image: uint8 (H, W, C) with C = 1 or 3, or (H, W).
        mask: ground truth, the 1/8 soft target or full resolution; None if
            the image has no mask.
        seg_prob: segmentation probabilities (sigmoid) at 1/8, (h, w).
        score: image score (sigmoid of the decision logit), shown in the title.
        out_png: output path.
        weight: optional loss-weight map (any resolution) shown as its own panel.
        title: text before the score, e.g. the image name and its label.

    Maps are resized bilinearly to the image size. Wide images (W > H) are
    transposed to portrait, like the reference, so the panels stay readable.

    Example:
    >>> import tempfile, os
    >>> img = np.full((64, 64, 1), 128, np.uint8)
    >>> out = plot_sample(img, None, np.zeros((8, 8)), 0.12, os.path.join(tempfile.mkdtemp(), "s.png"))
    >>> out.suffix
    '.png'
    """
    from matplotlib import colormaps
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize

    img = np.asarray(image)
    if img.ndim == 3 and img.shape[2] == 1:
        img = img[..., 0]
    if img.ndim not in (2, 3):
        raise ValueError(f"image must be (H, W) or (H, W, C), got shape {img.shape}")
    height, width = img.shape[:2]
    prob = np.clip(_to_size(seg_prob, height, width), 0.0, 1.0)
    gt = None if mask is None else _to_size(mask, height, width)
    w = None if weight is None else _to_size(weight, height, width)

    transposed = width > height
    if transposed:
        img = np.swapaxes(img, 0, 1)
        prob, gt, w = (None if a is None else a.T for a in (prob, gt, w))
        height, width = width, height

    panels = ["input", "ground truth"] + (["loss weights"] if w is not None else []) + ["segmentation"]
    panel_h = 4.0
    panel_w = max(1.9, panel_h * width / height)
    fig = _figure(panel_w * len(panels) + 0.4, panel_h + 0.9)
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    grey = dict(cmap="gray", vmin=0, vmax=255) if img.ndim == 2 else {}

    axes[0].imshow(img, **grey)
    if gt is None:
        axes[1].imshow(np.zeros((height, width)), cmap="gray", vmin=0, vmax=1)
        axes[1].text(width / 2, height / 2, "no\nmask", color="white", ha="center", va="center")
    else:
        # Thin defects give faint 1/8 soft targets: scale to the maximum (named in the title).
        gt_max = float(gt.max())
        axes[1].imshow(gt, cmap="gray", vmin=0, vmax=gt_max if gt_max > 0 else 1.0)
        panels[1] = f"ground truth\n(max {gt_max:.2f})"
    if w is not None:
        axes[2].imshow(w, cmap="viridis")  # scaled to its own range, given in the title
        panels[2] = f"loss weights\n({float(w.min()):.2f} to {float(w.max()):.2f})"
    heat = colormaps["jet"](prob)
    heat[..., 3] = 0.85 * np.sqrt(prob)  # colours on the fixed 0..1 scale; low values fade out
    axes[-1].imshow(img, **grey)
    axes[-1].imshow(heat)
    panels[-1] = f"segmentation\n(max {float(prob.max()):.2f})"
    scale = ScalarMappable(norm=Normalize(0.0, 1.0), cmap="jet")
    fig.colorbar(scale, ax=axes[-1], fraction=0.046, pad=0.02).ax.tick_params(labelsize=7)
    for ax, name in zip(axes, panels):
        ax.set_title(name, fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
    head = f"{title}  |  " if title else ""
    fig.suptitle(f"{head}score {float(score):.3f}" + ("  (transposed)" if transposed else ""),
                 fontsize=10)
    fig.tight_layout()
    return _save(fig, out_png)


# ---------------------------------------------------------------------------------------------
# Reports


def _truthy(value):
    if isinstance(value, str):
        return value.strip().lower() in ("1", "true", "t", "yes", "y", "1.0")
    return bool(value)


def _fmt(value, percent=False):
    if isinstance(value, bool) or value is None:
        return str(value)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "n/a"
        return f"{100 * value:.2f} %" if percent else f"{value:.4g}"
    return str(value)


# (key, label, shown as percent)
HEADLINE = (
    ("ap", "AP (average_precision_score)", True),
    ("ap_trapezoid", "AP (trapezoid, per-run reference)", True),
    ("auc", "ROC AUC", True),
    ("threshold", "decision threshold", False),
    ("fp", "false positives", False),
    ("fn", "false negatives", False),
    ("f_measure", "F-measure", False),
    ("accuracy", "accuracy", True),
    ("fp_at_fn0", "FP at FN = 0", False),
    ("fp_at_05", "FP at 0.5", False),
    ("fn_at_05", "FN at 0.5", False),
    ("n_images", "test images", False),
    ("n_positives", "defective test images", False),
)


def _outcome(row):
    gt, dec = _truthy(row.get("ground_truth")), _truthy(row.get("decision"))
    return {(True, True): "TP", (False, False): "TN", (False, True): "FP", (True, False): "FN"}[(gt, dec)]


def _existing_figure(run_dir, row):
    fig = row.get("figure")
    if not fig:
        return None
    path = Path(fig)
    full = path if path.is_absolute() else run_dir / path
    return full if full.is_file() else None


def _rel(run_dir, path):
    """``path`` relative to ``run_dir`` as a URL (forward slashes, percent-encoded)."""
    return quote(Path(os.path.relpath(path, run_dir)).as_posix())


def _parts(metrics):
    """Per-fold or per-class metrics as ``[(name, dict)]`` (empty for a single run)."""
    if isinstance(metrics.get("folds"), list):
        return [(f"fold {i}", m) for i, m in enumerate(metrics["folds"])]
    if isinstance(metrics.get("classes"), dict):
        return list(metrics["classes"].items())
    return []


def _markdown(run_dir, metrics, rows, config):
    lines = ["# kdefect run report", ""]
    if config.get("name") or config.get("dataset"):
        lines += [f"Run `{config.get('name', '')}` on `{config.get('dataset', '')}`.", ""]
    lines += [
        f"**AP {_fmt(metrics.get('ap'), True)}**, AUC {_fmt(metrics.get('auc'), True)}, "
        f"FP {_fmt(metrics.get('fp'))}, FN {_fmt(metrics.get('fn'))} "
        f"at threshold {_fmt(metrics.get('threshold'))}.",
        "",
    ]
    parts = _parts(metrics)
    if parts:
        lines += ["AP/AUC are means over the parts below; FP/FN are sums, each part decided at its own "
                  "threshold (the threshold shown is their mean).", ""]
    lines += ["| metric | value |", "|---|---|"]
    lines += [f"| {label} | {_fmt(metrics[key], pct)} |" for key, label, pct in HEADLINE if key in metrics]
    lines.append("")
    if parts:
        lines += ["| part | AP | AUC | threshold | FP | FN |", "|---|---|---|---|---|---|"]
        for name, m in parts:
            lines.append(f"| {name} | {_fmt(m.get('ap'), True)} | {_fmt(m.get('auc'), True)} | "
                         f"{_fmt(m.get('threshold'))} | {_fmt(m.get('fp'))} | {_fmt(m.get('fn'))} |")
        lines.append("")
    curves = [name for name in CURVE_PNGS if (run_dir / name).is_file()]
    if curves:
        lines += ["## Curves", ""] + [f"![{name}]({name})" for name in curves] + [""]
    errors = [r for r in rows if r["outcome"] in ("FP", "FN")]
    lines += ["## Misclassified images", ""]
    if not errors:
        lines.append("None.")
    for r in errors:
        link = f" - [figure]({r['rel']})" if r["rel"] else ""
        lines.append(f"- {r['outcome']}: `{r['image']}` score {r['score']:.4f}{link}")
    lines += ["", "## All test images (by score)", "", "| image | score | ground truth | decision | outcome |",
              "|---|---|---|---|---|"]
    for r in rows:
        name = f"[{r['image']}]({r['rel']})" if r["rel"] else r["image"]
        lines.append(f"| {name} | {r['score']:.4f} | {int(r['gt'])} | {int(r['dec'])} | {r['outcome']} |")
    lines += ["", "See `report.html` for the image gallery and `metrics.json` for every metric.", ""]
    return "\n".join(lines)


CSS = """
body{font-family:system-ui,sans-serif;margin:1.5em;color:#222;background:#fafafa}
h1{margin-top:0} table{border-collapse:collapse;margin:0.5em 0 1em}
td,th{border:1px solid #ccc;padding:3px 9px;text-align:right} th{background:#eee}
td:first-child,th:first-child{text-align:left}
.headline{font-size:1.2em;margin:0.4em 0 1em}
.curves img{max-width:32%;min-width:280px;margin-right:1%;border:1px solid #ddd;background:#fff}
.gallery{display:flex;flex-wrap:wrap;gap:10px}
.card{background:#fff;border:4px solid #bbb;border-radius:6px;padding:6px;max-width:100%;font-size:0.85em}
.card img{height:260px;width:auto;max-width:100%;object-fit:contain;display:block;margin-top:4px}
.card.TP{border-color:#4a4} .card.TN{border-color:#ccc}
.card.FP{border-color:#d22;background:#fee} .card.FN{border-color:#e80;background:#fff3e0}
.badge{display:inline-block;font-weight:bold;padding:1px 6px;border-radius:3px;color:#fff}
.badge.TP{background:#4a4} .badge.TN{background:#999} .badge.FP{background:#d22} .badge.FN{background:#e80}
.name{word-break:break-all;font-family:monospace} .nofig{color:#888;padding:2em 0;text-align:center}
pre{background:#fff;border:1px solid #ddd;padding:0.5em;overflow:auto;max-height:30em}
"""

OUTCOME_TEXT = {"TP": "true positive", "TN": "true negative",
                "FP": "FALSE POSITIVE", "FN": "FALSE NEGATIVE"}


def _data_uri(path):
    return "data:image/png;base64," + base64.b64encode(Path(path).read_bytes()).decode("ascii")


def _html(run_dir, metrics, rows, config, embed):
    e = html.escape

    def src(path, embed_this):
        return _data_uri(path) if embed_this else e(_rel(run_dir, path))

    counts = {k: sum(r["outcome"] == k for r in rows) for k in OUTCOME_TEXT}
    out = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
           "<title>kdefect report</title>", f"<style>{CSS}</style></head><body>",
           "<h1>kdefect run report</h1>"]
    if config.get("name") or config.get("dataset"):
        out.append(f"<p>Run <b>{e(str(config.get('name', '')))}</b> on "
                   f"<b>{e(str(config.get('dataset', '')))}</b></p>")
    out.append(f'<p class="headline">AP <b>{_fmt(metrics.get("ap"), True)}</b> · '
               f'AUC <b>{_fmt(metrics.get("auc"), True)}</b> · FP <b>{_fmt(metrics.get("fp"))}</b> · '
               f'FN <b>{_fmt(metrics.get("fn"))}</b> · threshold {_fmt(metrics.get("threshold"))}</p>')

    out.append("<h2>Metrics</h2><table><tr><th>metric</th><th>value</th></tr>")
    out += [f"<tr><td>{e(label)}</td><td>{e(_fmt(metrics[key], pct))}</td></tr>"
            for key, label, pct in HEADLINE if key in metrics]
    out.append("</table>")
    parts = _parts(metrics)
    if parts:
        out.append("<p>AP/AUC: mean over the parts; FP/FN: sums, each part at its own threshold.</p>")
        out.append("<table><tr><th>part</th><th>AP</th><th>AUC</th><th>threshold</th>"
                   "<th>FP</th><th>FN</th></tr>")
        for name, m in parts:
            out.append(f"<tr><td>{e(str(name))}</td><td>{_fmt(m.get('ap'), True)}</td>"
                       f"<td>{_fmt(m.get('auc'), True)}</td><td>{_fmt(m.get('threshold'))}</td>"
                       f"<td>{_fmt(m.get('fp'))}</td><td>{_fmt(m.get('fn'))}</td></tr>")
        out.append("</table>")

    curves = [run_dir / n for n in CURVE_PNGS if (run_dir / n).is_file()]
    if curves:
        out.append('<h2>Curves</h2><div class="curves">')
        out += [f'<img src="{src(p, True)}" alt="{e(p.name)}">' for p in curves]
        out.append("</div>")

    out.append("<h2>Test images, highest score first</h2>")
    out.append("<p>" + " · ".join(
        f'<span class="badge {k}">{k}</span> {OUTCOME_TEXT[k].lower()}: {counts[k]}' for k in OUTCOME_TEXT
    ) + "</p>")
    errors = [r for r in rows if r["outcome"] in ("FP", "FN")]
    if errors:
        out.append("<p>Misclassified: " + ", ".join(
            f'<a href="#img{r["index"]}">{r["outcome"]} {e(r["image"])}</a>' for r in errors) + "</p>")
    if not embed:
        out.append("<p>Figures are linked from the run directory; keep this file next to them.</p>")
    out.append('<div class="gallery">')
    for r in rows:
        o = r["outcome"]
        out.append(f'<div class="card {o}" id="img{r["index"]}">')
        out.append(f'<div><span class="badge {o}">{OUTCOME_TEXT[o]}</span> '
                   f'score <b>{r["score"]:.4f}</b></div>')
        out.append(f'<div class="name">{e(r["image"])}</div>')
        out.append(f'<div>ground truth {"defect" if r["gt"] else "OK"} · '
                   f'decision {"defect" if r["dec"] else "OK"}</div>')
        if r["path"] is not None:
            s = src(r["path"], embed)
            out.append(f'<a href="{s}" target="_blank"><img src="{s}" loading="lazy" '
                       f'alt="{e(r["image"])}"></a>' if not embed else
                       f'<img src="{s}" loading="lazy" alt="{e(r["image"])}">')
        else:
            out.append('<div class="nofig">no figure</div>')
        out.append("</div>")
    out.append("</div>")
    out.append("<h2>Configuration</h2><details><summary>show</summary><pre>"
               + e(json.dumps(config, indent=2, sort_keys=True, default=str)) + "</pre></details>")
    out.append("</body></html>")
    return "\n".join(out)


def write_report(run_dir, metrics, results, config, embed=None):
    """Write ``report.md`` and ``report.html`` into ``run_dir``; return both paths.

    Args:
        run_dir: the run directory; ``precision-recall.png``, ``roc.png`` and
            ``history.png`` are shown when present there.
        metrics: ``kdefect.metrics.image_metrics`` output (or a join, whose
            ``folds``/``classes`` get their own table).
        results: one dict per test image with ``image``, ``score``,
            ``ground_truth``, ``decision`` and ``figure`` (path relative to
            ``run_dir``, or None). Figures that do not exist are not linked.
        config: the run configuration (shown in the HTML, ``name`` and
            ``dataset`` used in the heading when present).
        embed: put gallery figures into the HTML as base64 data (True), link
            them by relative path (False), or decide by their total size
            (None: embed up to 8 MB). The curves are always embedded.

    Example:
    >>> import tempfile
    >>> from kdefect.metrics import image_metrics
    >>> d = tempfile.mkdtemp()
    >>> rows = [{"image": "a.png", "score": 0.9, "ground_truth": 1, "decision": True, "figure": None}]
    >>> md, page = write_report(d, image_metrics([1, 0], [0.9, 0.2]), rows, {"dataset": "synthetic"})
    >>> md.name, page.name
    ('report.md', 'report.html')
    """
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    rows = []
    for i, r in enumerate(sorted(results, key=lambda r: -float(r["score"]))):
        path = _existing_figure(run_dir, r)
        row = {"index": i, "image": str(r["image"]), "score": float(r["score"]),
               "gt": _truthy(r.get("ground_truth")), "dec": _truthy(r.get("decision")),
               "outcome": _outcome(r), "path": path,
               "rel": None if path is None else _rel(run_dir, path)}
        rows.append(row)
    if embed is None:
        embed = sum(r["path"].stat().st_size for r in rows if r["path"]) <= EMBED_LIMIT

    md_path = run_dir / "report.md"
    md_path.write_text(_markdown(run_dir, metrics, rows, dict(config)), encoding="utf-8")
    html_path = run_dir / "report.html"
    html_path.write_text(_html(run_dir, metrics, rows, dict(config), bool(embed)), encoding="utf-8")
    return md_path, html_path
