"""``kdefect experiment``: run one of the paper's tables (kdefect.experiments) and summarise it.

cli/main.py registers the command at its end (``main.add_command(experiment)``),
so this module takes ``user_errors`` and the size parser from it at call time,
not at import time (a top-level import would be circular).
"""

import functools

import click

from kdefect.data.labels import ANNOTATIONS

NAMES = ("positives", "table2", "disable-one", "table3", "add-one", "table5")


def _user_errors(fn):
    """cli/main.py's ``user_errors`` (one-line ``Error: ...``, exit code 2), looked up when called."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        from kdefect_cli.main import user_errors

        return user_errors(fn)(*args, **kwargs)

    return wrapper


def _size(ctx, param, value):
    from kdefect_cli.main import _parse_size

    return _parse_size(ctx, param, value)


def _names(ctx, param, value):
    """``0,1,2`` / ``a,b`` -> a list (None when not given)."""
    if value is None:
        return None
    items = [v.strip() for v in value.split(",") if v.strip()]
    if param.name == "folds":
        try:
            return [int(v) for v in items]
        except ValueError:
            raise click.BadParameter(f"{value!r} is not a comma-separated list of fold numbers") from None
    return items


@click.command(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.argument("name", type=click.Choice(NAMES))
@click.option("--dataset", type=click.Choice(["ksdd", "synthetic"]), default="ksdd", show_default=True,
              help="KolektorSDD (the paper's numbers beside ours) or the built-in synthetic data (no paper numbers).")
@click.option("--data-dir", type=click.Path(), default=None,
              help="Local copy of KolektorSDD (folder or zip). Default: $KDEFECT_DATA_DIR, else download.")
@click.option("--scale", type=click.FloatRange(min=0, min_open=True, max=4), default=None,
              help="Scale of the reference input size (KSDD 0.25 -> 352x128).")
@click.option("--input-size", callback=_size, default=None, metavar="HxW",
              help="Explicit input size, both divisible by 8 (overrides --scale).")
@click.option("--folds", callback=_names, default=None, metavar="0,1,2",
              help="Folds to run (default: all of the protocol; KSDD 0,1,2).")
@click.option("--epochs-max", type=click.IntRange(min=1), default=None, help="Cap every row's epochs.")
@click.option("--epochs-scale", type=click.FloatRange(min=0, min_open=True), default=None,
              help="Multiply every row's epochs (e.g. 0.1: 35 -> 4, keeping the sweep's ratios).")
@click.option("--num-samples", type=click.IntRange(min=4), default=None, help="Synthetic data: number of images.")
@click.option("--seed", type=int, default=None,
              help="Random seed of every run (default: the dataset config's, 1337). For a seed study give "
                   "each seed its own --output (folds finished with another seed are refused).")
@click.option("--annotation", type=click.Choice(ANNOTATIONS), default=None,
              help="Training labels of every run, as in `kdefect train --annotation` (default: the dataset "
                   "config's, mask).")
@click.option("--only", callback=_names, default=None, metavar="ROW,...", help="Run only these rows.")
@click.option("--output", type=click.Path(file_okay=False), default=None,
              help="Experiment folder (default: runs/experiment-<name>-<dataset>); run again to resume.")
@click.option("--figures", is_flag=True, help="Write per-image test figures for every run (slow on KSDD).")
@click.option("-q", "--quiet", is_flag=True, help="Only print the summary.")
@_user_errors
def experiment(name, dataset, data_dir, scale, input_size, folds, epochs_max, epochs_scale, num_samples, seed,
               annotation, only, output, figures, quiet):
    """Reproduce a table of the paper: NAME is positives (Table II), disable-one (III) or add-one (V).

    Each row of the table is a set of configuration changes (configs/experiments.yaml),
    trained over the dataset's folds into OUTPUT/<row>/. Finished folds are kept, so
    running the same command again continues an interrupted experiment. OUTPUT/summary.md
    and summary.csv list our AP and FP+FN beside the paper's, and say what was reduced.

    \b
    Examples:
      kdefect experiment disable-one --scale 0.25 --folds 0 --epochs-max 10
      kdefect experiment positives --epochs-scale 0.2 --only n33,n5
      kdefect experiment add-one --dataset synthetic --epochs-max 3
      kdefect experiment add-one --scale 0.25 --seed 42 --output runs/add-one-s42
      kdefect experiment disable-one --scale 0.25 --annotation boxes --only all-on,no-dt
    """
    from kdefect.config import load_config
    from kdefect.experiments import get_experiment, run_experiment

    canonical = get_experiment(name).name
    base = load_config(dataset, data_dir=data_dir, num_samples=num_samples, seed=seed,
                       annotation=annotation)
    output = output or f"runs/experiment-{canonical}-{dataset}"
    log = (lambda *a: None) if quiet else click.echo
    run_experiment(canonical, base, output, folds=folds, scale=scale, input_size=input_size,
                   epochs_max=epochs_max, epochs_scale=epochs_scale, only=only, figures=figures,
                   verbose=0 if quiet else 2, log=log)
    click.echo(open(f"{output}/summary.md").read().rstrip())
    click.echo(f"Wrote {output}/summary.md and summary.csv")
