"""Summary of an experiment: our AP / FP / FN beside the paper's, and what was reduced (CSV + Markdown).

``summary.csv`` starts with ``#`` comment lines (read it with
``pandas.read_csv(path, comment="#")``); missing numbers are empty there and
``–`` in ``summary.md``.

Example:
>>> from kdefect.config import load_config
>>> from kdefect.experiments import get_experiment, plan_experiment
>>> plan = plan_experiment(get_experiment("table3"), load_config("ksdd"), folds=[0], scale=0.25, epochs_max=2)
>>> reduced_statement(plan)[0]
'reduced: 1 fold of 3 (fold 0), 352x128 instead of 1408x512, 2 epochs instead of 35'
"""

import csv
from pathlib import Path

from kdefect.experiments import input_size_of, protocol_folds
from kdefect.reports import plot_experiment

PAPER_COLUMN = {"ksdd": "ksdd", "dagm": "dagm", "steel": "severstal"}  # our dataset -> the paper's column
NOT_COMPARED = ("data_dir", "fold", "input_size", "scale", "epochs", "in_memory", "extra", "seed")
DASH = "–"
SUMMARY_PNG = "summary.png"


def _size(hw):
    return "x".join(map(str, hw))


def _epochs_part(planned):
    ours = [p.config.epochs for p in planned]
    paper = [p.reference.epochs for p in planned]
    if ours == paper:
        return None
    if len(set(ours)) == 1 and len(set(paper)) == 1:
        return f"{ours[0]} epoch{'s' * (ours[0] != 1)} instead of {paper[0]}"
    return f"epochs {'/'.join(map(str, ours))} instead of {'/'.join(map(str, paper))}"


def reduced_statement(planned):
    """Lines saying how the run differs from the paper's settings (empty when it does not).

    ``reduced: ...`` names fewer folds, a smaller input and fewer epochs;
    ``changed: ...`` other settings that differ from ``configs/<dataset>.yaml``.

    Example:
    >>> from kdefect.config import load_config
    >>> from kdefect.experiments import get_experiment, plan_experiment
    >>> reduced_statement(plan_experiment(get_experiment("table5"), load_config("ksdd", lr=1.0)))
    ['changed: lr 1.0 instead of 0.5']
    """
    first = planned[0]
    protocol = protocol_folds(first.config)
    reduced = []
    if len(first.folds) < len(protocol):
        n = len(first.folds)
        reduced.append(f"{n} fold{'s' * (n != 1)} of {len(protocol)} "
                       f"(fold{'s' * (n != 1)} {', '.join(map(str, first.folds))})")
    ours, paper = input_size_of(first.config), input_size_of(first.reference)
    if ours != paper:
        reduced.append(f"{_size(ours)} instead of {_size(paper)}")
    epochs = _epochs_part(planned)
    if epochs:
        reduced.append(epochs)
    mine, theirs = first.config.to_dict(), first.reference.to_dict()
    changed = [f"{k} {mine[k]} instead of {theirs[k]}" for k in mine
               if k not in NOT_COMPARED and mine[k] != theirs[k]]
    lines = [f"reduced: {', '.join(reduced)}"] if reduced else []
    if changed:
        lines.append(f"changed: {', '.join(changed)}")
    if first.config.dataset == "synthetic" and any("positives" in p.row.overrides for p in planned):
        lines.append("note: the synthetic dataset ignores `positives`; its rows differ only in epochs")
    return lines


def _pct(value):
    return None if value is None or value != value else round(100.0 * float(value), 2)


def _ap_text(value):
    """A paper AP as printed there: at least two decimals (``100.00``, ``99.996``), or None."""
    if value is None:
        return None
    text = f"{float(value):.4f}".rstrip("0")
    return text + "0" * max(0, 2 - len(text.split(".")[1]))


def _paper_cell(numbers):
    """``99.75 (1+0)``, ``99.78`` or None."""
    if not numbers or "ap" not in numbers:
        return None
    cell = _ap_text(numbers["ap"])
    if "fp" in numbers and "fn" in numbers:
        cell += f" ({numbers['fp']}+{numbers['fn']})"
    return cell


def summary_row(experiment, planned, metrics, status, row_dir):
    """One summary line (a dict) for a row: ours (None when not run) beside the paper's.

    Example:
    >>> from kdefect.config import load_config
    >>> from kdefect.experiments import get_experiment, plan_experiment
    >>> e = get_experiment("table3"); p = plan_experiment(e, load_config("ksdd"), only=["no-db"])[0]
    >>> r = summary_row(e, p, {"ap": 0.99, "fp": 2, "fn": 1}, "trained", "x/no-db")
    >>> r["ap"], r["fp_fn"], r["paper_ap"], r["paper_fp_fn"], r["paper_dagm"], r["paper_severstal"]
    (99.0, '2+1', 99.75, '1+0', '99.95 (2+2)', '98.32 (73+64)')
    """
    metrics = metrics or {}
    own = PAPER_COLUMN.get(planned.config.dataset)
    paper = planned.row.paper.get(own, {}) if own else {}
    fp, fn = metrics.get("fp"), metrics.get("fn")
    out = {
        "row": planned.row.name, "label": planned.row.label,
        "settings": " ".join(f"{k}={v}" for k, v in planned.row.overrides.items()),
        "epochs": planned.config.epochs, "paper_epochs": planned.reference.epochs,
        "folds": ",".join(map(str, planned.folds)), "input_size": _size(input_size_of(planned.config)),
        "status": status,
        "ap": _pct(metrics.get("ap")), "ap_trapezoid": _pct(metrics.get("ap_trapezoid")),
        "auc": _pct(metrics.get("auc")), "fp": fp, "fn": fn,
        "fp_fn": None if fp is None else f"{fp}+{fn}",
        "paper_ap": paper.get("ap"), "paper_fp": paper.get("fp"), "paper_fn": paper.get("fn"),
        "paper_fp_fn": f"{paper['fp']}+{paper['fn']}" if "fp" in paper else None,
    }
    for column in experiment.columns:
        if column != own:
            out[f"paper_{column}"] = _paper_cell(planned.row.paper.get(column))
    out["wall_time_s"] = metrics.get("wall_time_seconds")
    out["run_dir"] = str(row_dir)
    return out


def _header(experiment, planned, wall_time):
    first = planned[0]
    dataset = first.config.dataset
    own = PAPER_COLUMN.get(dataset)
    folds = f"fold{'s' * (len(first.folds) > 1)} {', '.join(map(str, first.folds))}"
    joined = ("; AP is the mean over folds, FP/FN the sums at each fold's threshold of highest F-measure"
              if len(first.folds) > 1 else "; FP/FN at the threshold of highest F-measure")
    lines = [f"experiment {experiment.name} (Table {experiment.table}) on {dataset}: {folds} at "
             f"{_size(input_size_of(first.config))}, seed {first.config.seed}{joined}"]
    lines += reduced_statement(planned) or ["the paper's settings (nothing reduced)"]
    if own in experiment.columns:
        lines.append(f"paper: {experiment.columns[own]} column of Table {experiment.table}; other columns "
                     "for reference")
    else:
        lines.append(f"paper: {DASH} (the paper reports no {dataset} results); its columns are shown for reference")
    lines.append(f"wall time of this invocation: {wall_time:.0f} s")
    return lines


def _md(value, suffix=""):
    return DASH if value is None or value == "" else f"{value}{suffix}"


def write_summary(experiment, planned, rows, output_dir, wall_time=0.0):
    """Write ``summary.csv``, ``summary.md`` and ``summary.png`` (AP per row, ours beside the
    paper's) into ``output_dir``; return the paths of the first two.

    Example:
    >>> from kdefect.config import load_config
    >>> from kdefect.experiments import get_experiment, plan_experiment
    >>> e = get_experiment("table5"); plan = plan_experiment(e, load_config("ksdd"))
    >>> rows = [summary_row(e, p, None, "not run", "-") for p in plan]
    >>> csv_path, md_path = write_summary(e, plan, rows, "/tmp/kdefect-doctest-summary")
    >>> "| all | all four (DB + GA + FS + DT) | 35 | – | – | 100.00 | 0+0 | 100.00 (0+0) |" in md_path.read_text()
    True
    """
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    header = _header(experiment, planned, wall_time)
    csv_path, md_path = output_dir / "summary.csv", output_dir / "summary.md"
    with open(csv_path, "w", newline="") as f:
        f.writelines(f"# {line}\n" for line in header)
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows({k: ("" if v is None else v) for k, v in row.items()} for row in rows)
    extra = [f"paper_{c}" for c in experiment.columns if f"paper_{c}" in rows[0]]
    names = [experiment.columns[k[len("paper_"):]] for k in extra]
    lines = [f"# {experiment.title}", ""] + [f"- {line}" for line in header] + [""]
    lines.append("| row | setting | epochs | AP % | FP+FN | paper AP % | paper FP+FN | "
                 + "".join(f"{n} (paper) | " for n in names) + "status |")
    lines.append("|---" * (8 + len(names)) + "|")
    for row in rows:
        epochs = row["epochs"]
        if epochs != row["paper_epochs"]:
            epochs = f"{epochs} (paper {row['paper_epochs']})"
        ours = None if row["ap"] is None else f"{row['ap']:.2f}"
        cells = [row["row"], row["label"], epochs, _md(ours), _md(row["fp_fn"]), _md(_ap_text(row["paper_ap"])),
                 _md(row["paper_fp_fn"])] + [_md(row[k]) for k in extra] + [row["status"]]
        lines.append("| " + " | ".join(map(str, cells)) + " |")
    png = plot_experiment([row["label"] for row in rows], [row["ap"] for row in rows],
                          [row["paper_ap"] for row in rows], f"Table {experiment.table}: AP", output_dir / SUMMARY_PNG)
    lines += ["", f"![AP per row, ours beside the paper's]({png.name})", "",
              "FP+FN: false positives + false negatives. Per-row run folders (reports, metrics.json) are "
              "next to this file."]
    md_path.write_text("\n".join(lines) + "\n")
    return csv_path, md_path
