"""The experiment runner: the paper's tables as configurations, a tiny ablation end to end, resuming, the CLI."""

import csv
import io

import pytest
from click.testing import CliRunner

from kdefect.config import TrainConfig, load_config
from kdefect.errors import InputError
from kdefect.experiment_summary import reduced_statement
from kdefect.experiments import get_experiment, load_experiments, plan_experiment, run_experiment

COMPONENTS = ("dyn_balance", "grad_adjust", "freq_sampling", "weighted")  # DB, GA, FS, DT
TINY = TrainConfig(num_samples=24, input_size=(64, 128), batch_size=4, epochs=2)


def _toggles(experiment):
    return {row.name: tuple(row.overrides[c] for c in COMPONENTS) for row in experiment.rows}


def test_tables_match_the_paper_settings():
    sweep = get_experiment("table2")
    assert [(r.overrides["positives"], r.overrides["epochs"]) for r in sweep.rows] == [
        (33, 35), (25, 40), (20, 50), (15, 70), (10, 90), (5, 150)]
    by_positives = load_config("ksdd").extra["epochs_by_positives"]  # the same numbers as configs/ksdd.yaml
    assert all(by_positives[r.overrides["positives"]] == r.overrides["epochs"] for r in sweep.rows)
    assert [r.paper["ksdd"]["ap"] for r in sweep.rows] == [100.00, 99.78, 100.00, 99.88, 99.31, 96.71]

    on, off = True, False
    assert _toggles(get_experiment("table3")) == {
        "no-db": (off, on, on, on), "no-ga": (on, off, on, on), "no-fs": (on, on, off, on),
        "no-dt": (on, on, on, off), "all-on": (on, on, on, on)}
    assert _toggles(get_experiment("table5")) == {
        "nothing": (off, off, off, off), "db": (on, off, off, off), "db-ga": (on, on, off, off),
        "db-ga-fs": (on, on, on, off), "all": (on, on, on, on)}
    assert get_experiment("disable-one").row("no-ga").paper["dagm"] == {"ap": 91.88, "fp": 471, "fn": 68}
    assert get_experiment("add-one").row("nothing").paper["ksdd"] == {"ap": 99.77, "fp": 0, "fn": 1}

    # Rows with the same configuration in both tables carry the same published numbers.
    rows = [r for name in ("disable-one", "add-one") for r in load_experiments()[name].rows]
    for a in rows:
        for b in rows:
            if a.overrides == b.overrides:
                assert a.paper == b.paper, (a.name, b.name)


def test_plan_applies_rows_and_reductions_and_says_so():
    plan = plan_experiment(get_experiment("positives"), load_config("ksdd"), folds=[0], scale=0.25,
                           epochs_scale=0.1)
    assert [(p.config.positives, p.config.epochs, p.config.fold) for p in plan] == [
        (33, 4, None), (25, 4, None), (20, 5, None), (15, 7, None), (10, 9, None), (5, 15, None)]
    assert reduced_statement(plan) == [
        "reduced: 1 fold of 3 (fold 0), 352x128 instead of 1408x512, epochs 4/4/5/7/9/15 instead of "
        "35/40/50/70/90/150"]
    sized = plan_experiment(get_experiment("add-one"), load_config("ksdd", input_size=(704, 256)), scale=0.25)
    assert sized[0].config.input_size is None and reduced_statement(sized) == ["reduced: 352x128 instead of 1408x512"]
    full = plan_experiment(get_experiment("disable-one"), load_config("ksdd"))
    assert reduced_statement(full) == [] and full[0].folds == (0, 1, 2) and full[0].config.epochs == 35
    with pytest.raises(InputError, match="no row 'n7'"):
        plan_experiment(get_experiment("positives"), load_config("ksdd"), only=["n7"])
    with pytest.raises(InputError, match="folds 3"):
        plan_experiment(get_experiment("positives"), load_config("ksdd"), folds=[3])
    with pytest.raises(InputError, match="unknown experiment"):
        get_experiment("table4")


def _read_csv(path):
    text = path.read_text()
    comments = [line[2:] for line in text.splitlines() if line.startswith("# ")]
    rows = list(csv.DictReader(io.StringIO("".join(l for l in text.splitlines(True) if not l.startswith("#")))))
    return comments, rows


@pytest.mark.slow
def test_tiny_ablation_end_to_end_and_resume(tmp_path):
    out = tmp_path / "exp"
    logged = []
    rows = run_experiment("add-one", TINY, out, epochs_max=1, only=["nothing", "all"], log=logged.append)
    assert [r["status"] for r in rows] == ["trained", "not run", "not run", "not run", "trained"]
    for name in ("nothing", "all"):
        assert (out / name / "metrics.json").exists() and (out / name / "report.html").exists()
    assert 0 <= rows[0]["ap"] <= 100 and rows[0]["fp"] + rows[0]["fn"] >= 0 and rows[0]["paper_ap"] is None

    comments, table = _read_csv(out / "summary.csv")
    assert "reduced: 64x128 instead of 128x128, 1 epoch instead of 10" in comments
    assert [r["row"] for r in table] == ["nothing", "db", "db-ga", "db-ga-fs", "all"]
    assert table[0]["paper_ap"] == "" and table[0]["paper_ksdd"] == "99.77 (0+1)"
    assert float(table[4]["ap"]) == rows[4]["ap"] and table[4]["fp"] == str(rows[4]["fp"])
    md = (out / "summary.md").read_text()
    assert (out / "summary.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and "](summary.png)" in md
    assert "- reduced: 64x128 instead of 128x128, 1 epoch instead of 10" in md
    assert "paper: – (the paper reports no synthetic results)" in md
    line = next(l for l in md.splitlines() if l.startswith("| all |"))
    cells = [c.strip() for c in line.strip("|").split("|")]
    assert cells[2:4] == ["1 (paper 10)", f"{rows[4]['ap']:.2f}"] and cells[5:7] == ["–", "–"]
    assert cells[7] == "100.00 (0+0)" and cells[-1] == "trained"

    # Run again with one more row: finished rows are kept, not retrained.
    logged.clear()
    again = run_experiment("add-one", TINY, out, epochs_max=1, only=["nothing", "db"], log=logged.append)
    assert [r["status"] for r in again] == ["resumed", "trained", "not run", "not run", "earlier"]
    assert again[0]["ap"] == rows[0]["ap"] and any("finished earlier" in m for m in logged)
    # Other settings on the same folder are refused before anything trains.
    with pytest.raises(InputError, match="trained with other settings: epochs 1"):
        run_experiment("add-one", TINY, out, epochs_max=2, only=["db"], log=logged.append)


def test_cli_runs_a_row_and_reports_errors_in_one_line(tmp_path):
    from kdefect_cli.main import main

    runner = CliRunner()
    args = ["experiment", "table3", "--dataset", "synthetic", "--num-samples", "16", "--input-size", "64x128",
            "--epochs-max", "1", "--output", str(tmp_path / "cli"), "--quiet"]
    result = runner.invoke(main, args + ["--only", "all-on", "--seed", "7", "--annotation", "boxes"],
                           standalone_mode=False)
    assert result.exit_code == 0, result.output
    assert "changed: annotation boxes instead of mask" in result.output
    assert "| all-on | none disabled (all four on) | 1 (paper 10) |" in result.output
    assert "synthetic: fold 0 at 64x128, seed 7;" in result.output
    assert (tmp_path / "cli" / "summary.csv").exists()
    saved = (tmp_path / "cli" / "all-on" / "config.yaml").read_text()
    assert "seed: 7\n" in saved and "annotation: boxes\n" in saved
    # Another seed (or annotation) into the same folder is refused before anything trains.
    other = runner.invoke(main, args + ["--only", "all-on", "--seed", "8", "--annotation", "boxes"])
    assert other.exit_code == 2 and "trained with other settings: seed 7 (now 8)" in other.output
    masks = runner.invoke(main, args + ["--only", "all-on", "--seed", "7"])
    assert masks.exit_code == 2 and "trained with other settings: annotation 'boxes' (now 'mask')" in masks.output

    bad = runner.invoke(main, args + ["--only", "nope"])
    assert bad.exit_code == 2 and bad.output.strip().splitlines()[-1].startswith("Error: experiment 'disable-one'")


def test_a_diverged_row_is_reported_and_the_others_still_run(tmp_path, monkeypatch):
    import kdefect.training
    from kdefect.errors import TrainingDiverged

    calls = []

    def fake_train(config, output=None, **kwargs):
        calls.append(config.dyn_balance)
        if not config.dyn_balance:
            raise TrainingDiverged(1, "cls_loss", float("nan"))
        return {"ap": 0.5, "ap_trapezoid": 0.5, "auc": 0.5, "fp": 1, "fn": 2, "wall_time_seconds": 0.1}

    monkeypatch.setattr(kdefect.training, "train", fake_train)
    rows = run_experiment("add-one", TINY, tmp_path, only=["nothing", "db"], log=lambda *a: None)
    assert calls == [False, True]
    assert [(r["status"], r["ap"], r["fp_fn"]) for r in rows[:2]] == [("diverged (fold 0)", None, None),
                                                                       ("trained", 50.0, "1+2")]
    assert "| nothing | nothing (all four off) | 2 (paper 10) | – | – |" in (tmp_path / "summary.md").read_text()
