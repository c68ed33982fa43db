"""The ``kdefect`` command line: a thin Click layer over the library.

Each command parses options, calls one library function and prints a short
summary. Bad input (``kdefect.errors.InputError``) becomes a one-line
``Error: ...`` message with exit code 2 and no traceback.

Shell completion (bash): ``eval "$(_KDEFECT_COMPLETE=bash_source kdefect)"``
(``zsh_source`` / ``fish_source`` for other shells).
"""

import contextlib
import dataclasses
import functools
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import click  # noqa: E402


def quiet_tensorflow_import():
    """Import TensorFlow with its start-up chatter (absl/oneDNN lines on stderr) hidden.

    Those lines are printed by C++ before logging is configured, so no
    environment variable hides them; set ``KDEFECT_TF_LOGS=1`` to see them.
    """
    if os.environ.get("KDEFECT_TF_LOGS") == "1" or "tensorflow" in sys.modules:
        return
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), 2)
            import tensorflow  # noqa: F401
    finally:
        os.dup2(saved, 2)
        os.close(saved)


quiet_tensorflow_import()  # `import kdefect` loads TensorFlow; keep its start-up chatter off stderr

from kdefect.config import ANNOTATIONS, DATASETS, PRECISIONS, STRATEGIES  # noqa: E402
from kdefect.errors import InputError, TrainingDiverged  # noqa: E402

CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


class UserError(click.ClickException):
    """A one-line error for the user; exit code 2 like Click's own usage errors."""

    exit_code = 2


def user_errors(fn):
    """Turn ``InputError`` (and missing files) into ``UserError``."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        quiet_tensorflow_import()
        try:
            return fn(*args, **kwargs)
        except InputError as err:
            raise UserError(str(err)) from None
        except TrainingDiverged as err:  # a failed run, not bad input: exit code 1
            raise click.ClickException(str(err)) from None
        except FileNotFoundError as err:
            raise UserError(f"{err.filename}: no such file or directory") from None
        except OSError as err:  # e.g. an unwritable --output; errors without a file are bugs
            if err.filename is None:
                raise
            raise UserError(f"{err.filename}: {err.strerror or err}") from None

    return wrapper


def _parse_size(ctx, param, value):
    if value is None:
        return None
    try:
        height, width = (int(v) for v in value.lower().split("x"))
    except ValueError:
        raise click.BadParameter(f"{value!r} is not HxW, e.g. 704x256") from None
    return (height, width)


def _parse_fold(ctx, param, value):
    if value is None or value == "all":
        return value
    try:
        return int(value)
    except ValueError:
        raise click.BadParameter(f"{value!r} is not a fold number or 'all'") from None


def _off(flag):
    """``--no-x`` flags: False when given, None (config decides) when not."""
    return False if flag else None


class OneLineErrors(click.Group):
    """A Click group whose errors are one line (``Error: ...``) on stderr, exit code 2."""

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode, **extra)
        try:
            code = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except click.ClickException as err:
            message = " ".join(err.format_message().split())  # one line, whatever the message
            click.echo(f"Error: {message}", err=True)
            sys.exit(err.exit_code)
        except click.Abort:
            click.echo("Aborted.", err=True)
            sys.exit(1)
        sys.exit(code if isinstance(code, int) else 0)


@click.group(cls=OneLineErrors, context_settings=CONTEXT)
@click.version_option(package_name="kdefect", prog_name="kdefect")
def main():
    """kdefect: find surface defects with the end-to-end SegDecNet (Božič et al., ICPR 2020).

    \b
    Typical session:
      kdefect train                                   # built-in synthetic data, a few minutes
      kdefect train --dataset ksdd --positives 10 --scale 0.5
      kdefect predict runs/<run>/model.keras images/ --output predictions/
      kdefect export runs/<run>/model.keras --saved-model --tflite --quantize int8

    Run `kdefect COMMAND --help` for the options of each command.
    """


@main.command(context_settings=CONTEXT)
@click.option("--dataset", type=click.Choice(DATASETS, case_sensitive=False), default=None,
              help="Dataset to train on (default: synthetic, or the one in --config).")
@click.option("--data-dir", type=click.Path(file_okay=True), default=None,
              help="Local copy of the dataset (folder or official zip). Default: $KDEFECT_DATA_DIR, "
                   "else download KolektorSDD into the cache.")
@click.option("--positives", type=click.IntRange(min=1), default=None,
              help="Number of positive training images of the paper's split (KSDD: 33, 25, 20, 15, 10, 5).")
@click.option("--segmented", type=click.IntRange(min=0), default=None,
              help="How many positives keep their pixel masks (mixed supervision, e.g. KSDD split_33_M).")
@click.option("--fold", callback=_parse_fold, default=None, metavar="K|all",
              help="Fold (KSDD 0-2, DAGM class 1-10) or 'all' for the whole protocol, joined.")
@click.option("--scale", type=click.FloatRange(min=0, min_open=True, max=4), default=None,
              help="Scale of the dataset's reference input size (KSDD 0.5 -> 704x256).")
@click.option("--input-size", callback=_parse_size, default=None, metavar="HxW",
              help="Explicit input size, both divisible by 8 (overrides --scale).")
@click.option("--epochs", type=click.IntRange(min=1), default=None, help="Training epochs.")
@click.option("--lr", type=click.FloatRange(min=0, min_open=True), default=None,
              help="SGD learning rate (no momentum; the loss is summed over the batch, as the reference).")
@click.option("--delta", type=click.FloatRange(min=0), default=None,
              help="δ, weight of the classification loss.")
@click.option("--batch-size", type=click.IntRange(min=1), default=None, help="Images per step.")
@click.option("--dilate", type=click.IntRange(min=1), default=None,
              help="Square dilation of the masks at original resolution (1 = none).")
@click.option("--annotation", type=click.Choice(ANNOTATIONS), default=None,
              help="'mask': the masks as given; 'boxes': each defect replaced by its rotated bounding "
                   "box (approximates the KSDD 'boxes' annotation the paper used).")
@click.option("--seed", type=int, default=None, help="Random seed (sampling and initialisation).")
@click.option("--config", "config_file", type=click.Path(dir_okay=False), default=None,
              help="YAML file of settings; explicit options win over it.")
@click.option("--output", type=click.Path(file_okay=False), default=None,
              help="Run directory (default: runs/<dataset>-<time>).")
@click.option("--overwrite", is_flag=True, help="Replace an existing, non-empty run directory.")
@click.option("--resume", "resume_dir", type=click.Path(file_okay=False), default=None, metavar="RUN_DIR",
              help="Continue an interrupted run from its last epoch checkpoint (uses its config.yaml).")
@click.option("--no-dyn-balance", is_flag=True, help="Constant loss weights (w_seg = 1, w_cls = δ).")
@click.option("--no-grad-adjust", is_flag=True,
              help="Let the classification loss train the segmentation network too.")
@click.option("--no-freq-sampling", is_flag=True, help="Uniform instead of frequency-of-use negatives.")
@click.option("--no-weighted-seg", is_flag=True, help="No distance-transform weights on positive pixels.")
@click.option("--precision", type=click.Choice(PRECISIONS), default=None,
              help="Compute precision; 'auto' picks mixed_bfloat16 on CPUs with BF16, mixed_float16 on GPUs, "
                   "else float32 (mixed_bfloat16 on a CPU without BF16 is emulated and slow: a warning says so).")
@click.option("--strategy", type=click.Choice(STRATEGIES), default=None,
              help="Devices: 'mirrored' = all GPUs of this machine, 'multi-worker' = several machines "
                   "(TF_CONFIG), 'auto' = mirrored with >1 GPU. --batch-size is the global batch.")
@click.option("--no-figures", is_flag=True, help="Skip the per-image test figures (faster).")
@click.option("-q", "--quiet", is_flag=True, help="Only print the final metrics.")
@user_errors
def train(dataset, data_dir, positives, segmented, fold, scale, input_size, epochs, lr, delta,
          batch_size, dilate, annotation, seed, config_file, output, overwrite, resume_dir, no_dyn_balance, no_grad_adjust,
          no_freq_sampling, no_weighted_seg, precision, strategy, no_figures, quiet):
    """Train SegDecNet end to end and evaluate it on the test split.

    Defaults come from configs/<dataset>.yaml (the paper's settings); the
    effective configuration is printed and saved as config.yaml in the run
    directory, next to metrics.json, results.csv, the model (model.keras),
    plots, per-image figures and report.html.

    \b
    Examples:
      kdefect train
      kdefect train --dataset ksdd --positives 10 --scale 0.25
      kdefect train --dataset folder --data-dir my_images/ --input-size 256x256
      kdefect train --resume runs/ksdd-20261123-101500   # continue an interrupted run
    """
    import yaml

    from kdefect.config import load_config
    from kdefect.training import train as run_training

    overrides = dict(
        data_dir=data_dir, positives=positives, segmented=segmented, scale=scale,
        input_size=input_size, epochs=epochs, lr=lr, delta=delta, batch_size=batch_size,
        dilate=dilate, annotation=annotation, seed=seed, precision=precision, dyn_balance=_off(no_dyn_balance),
        grad_adjust=_off(no_grad_adjust), freq_sampling=_off(no_freq_sampling),
        weighted=_off(no_weighted_seg), fold=None if fold == "all" else fold, strategy=strategy,
    )
    if resume_dir is not None:
        from kdefect.training import resume_run

        given = [k for k, v in overrides.items() if v is not None and k not in ("data_dir", "strategy")]
        given += [k for k, v in (("dataset", dataset), ("config", config_file), ("output", output),
                                 ("overwrite", overwrite), ("fold", fold)) if v and k not in given]
        if given:
            raise UserError("--resume continues a run with its saved config.yaml and takes no other "
                            f"settings (given: {', '.join(given)})")
        with _resume_hint_on_interrupt(resume_dir):
            metrics = resume_run(resume_dir, verbose=2 if quiet else "auto", figures=not no_figures,
                                 log=(lambda *a: None) if quiet else click.echo, data_dir=data_dir,
                                 strategy=strategy)
        _print_metrics(metrics)
        return
    config = load_config(dataset, config_file, **overrides)  # --dataset wins over --config's
    if fold == "all":
        config = dataclasses.replace(config, fold=None)
    if not quiet:
        click.echo("Effective configuration:")
        click.echo(yaml.safe_dump(config.to_dict(), sort_keys=False).rstrip())
    from kdefect.training import default_output

    output = output or str(default_output(config))
    with _resume_hint_on_interrupt(output):
        metrics = run_training(config, output=output, overwrite=overwrite,
                               verbose=2 if quiet else "auto", figures=not no_figures,
                               log=(lambda *a: None) if quiet else click.echo)
    _print_metrics(metrics)


class Interrupted(click.ClickException):
    """Ctrl-C during training; exit code 130 like a shell's SIGINT."""

    exit_code = 130


@contextlib.contextmanager
def _resume_hint_on_interrupt(run_dir):
    """Turn Ctrl-C during training into one line that says how to continue the run."""
    try:
        yield
    except KeyboardInterrupt:
        from kdefect.training import run_status

        if run_status(run_dir) == "interrupted":
            raise Interrupted(f"interrupted; continue with `kdefect train --resume {run_dir}`") from None
        raise


def _print_metrics(metrics):
    def pct(v):
        return "n/a" if v is None or v != v else f"{100 * v:.2f}%"

    folds = f" over {len(metrics['folds'])} folds" if "folds" in metrics else ""
    click.echo(
        f"Test{folds}: AP {pct(metrics['ap'])} (trapezoid {pct(metrics['ap_trapezoid'])}), "
        f"AUC {pct(metrics['auc'])}, FP {metrics['fp']}, FN {metrics['fn']} "
        f"at threshold {metrics['threshold']:.3f}; {metrics['n_images']} images, "
        f"{metrics['n_positives']} defective"
    )
    if metrics.get("run_dir"):
        click.echo(f"Run directory: {metrics['run_dir']} (open report.html)")


@main.command(context_settings=CONTEXT)
@click.argument("path", type=click.Path())
@click.option("--dataset", type=click.Choice(DATASETS, case_sensitive=False), default=None,
              help="Data to evaluate on (default: the run's own configuration).")
@click.option("--data-dir", type=click.Path(), default=None, help="Local copy of the dataset.")
@click.option("--fold", type=int, default=None, help="Fold / class for a bare model file.")
@click.option("--no-figures", is_flag=True, help="Skip the per-image figures.")
@user_errors
def evaluate(path, dataset, data_dir, fold, no_figures):
    """Re-evaluate a run directory (or a .keras model) and rewrite its reports.

    \b
    Examples:
      kdefect evaluate runs/ksdd-20261123-101500
      kdefect evaluate model.keras --dataset ksdd --fold 0
    """
    from kdefect.training import evaluate_path

    metrics = evaluate_path(path, figures=not no_figures, log=click.echo,
                            dataset=dataset, data_dir=data_dir, fold=fold)
    _print_metrics(metrics)


@main.command(context_settings=CONTEXT)
@click.argument("model", type=click.Path())
@click.argument("images", nargs=-1, required=True)
@click.option("--output", type=click.Path(file_okay=False), default="predictions", show_default=True,
              help="Folder for predictions.csv and overlays/.")
@click.option("--threshold", type=click.FloatRange(0, 1), default=None,
              help="Decision threshold (default: the one stored with the model).")
@click.option("--no-overlays", is_flag=True, help="Only write predictions.csv.")
@user_errors
def predict(model, images, output, threshold, no_overlays):
    """Score images with a .keras, SavedModel or .tflite MODEL.

    IMAGES are files, folders or glob patterns. Writes predictions.csv
    (image, score, decision) and heat-map overlays.

    \b
    Example:
      kdefect predict runs/x/model.keras new_parts/ --output checked/
    """
    from tqdm import tqdm

    from kdefect.predict import find_images, load_predictor, predict_files

    files = find_images(images)  # bad paths fail before the (slower) model load
    predictor = load_predictor(model)
    with tqdm(total=len(files), desc="predict", unit="img", disable=None) as bar:
        rows = predict_files(predictor, files, output, threshold=threshold,
                             overlays=not no_overlays, callback=lambda row: bar.update(1))
    defective = sum(int(r["decision"]) for r in rows)
    click.echo(f"{len(rows)} images, {defective} defective; wrote {output}/predictions.csv")


@main.command(context_settings=CONTEXT)
@click.argument("model", type=click.Path())
@click.option("--saved-model", is_flag=True, help="Write a SavedModel (the default when no format is given).")
@click.option("--tflite", is_flag=True, help="Write a float32 TFLite model (model.tflite).")
@click.option("--quantize", type=click.Choice(["float16", "int8"]), multiple=True,
              help="Also write a quantised TFLite model (model-float16.tflite, model-int8.tflite; "
                   "int8 calibrates on training images). Repeat for both.")
@click.option("--output", type=click.Path(file_okay=False), default=None,
              help="Output folder (default: <model folder>/export).")
@click.option("--threshold", type=click.FloatRange(0, 1), default=None,
              help="Decision threshold stored in the export (default: the evaluated one).")
@user_errors
def export(model, saved_model, tflite, quantize, output, threshold):
    """Export a trained .keras MODEL for serving, and check its parity.

    The export takes raw uint8 images of any size and returns named outputs
    score, label and segmentation (resizing and thresholds are inside the
    graph). Scores are checked against the Keras model on test images of the
    model's run: SavedModel/float32 within 1e-4, float16 within 1e-2, int8
    within 1 AP point; parity.json records the result.

    \b
    Example:
      kdefect export runs/x/model.keras --saved-model --tflite --quantize int8
      kdefect export runs/x/model.keras --tflite --quantize float16 --quantize int8
    """
    from pathlib import Path

    from kdefect.export import ParityError, export_model, load_keras_model
    from kdefect.training import export_samples

    variants = ([None] if tflite else []) + list(quantize)  # None: float32
    if not (saved_model or variants):
        saved_model = True
    load_keras_model(model)  # a missing or bad model fails before reading any data
    images, labels, representative = export_samples(model)
    output = output or str(Path(model).parent / "export")
    try:
        report = export_model(model, output, saved_model=saved_model, tflite=bool(variants),
                              quantize=variants, images=images, labels=labels, threshold=threshold,
                              representative=representative)
    except ParityError as err:  # a faulty export, not bad input: exit code 1
        raise click.ClickException(f"{err} (details in {Path(output) / 'parity.json'})") from None
    for result in report["results"]:
        line = f"{result['variant']}: max |score diff| {result['max_abs_diff']:.2e}"
        if result.get("ap_drop") is not None:
            line += f", AP drop {100 * result['ap_drop']:.2f} points"
        click.echo(f"{line} -> {result['path']}")
    click.echo(f"parity check passed on {report['n_images']} images; wrote {output}")


from kdefect_cli.experiment import experiment  # noqa: E402  (the paper's tables: `kdefect experiment`)

main.add_command(experiment)

from kdefect_cli.bench import bench  # noqa: E402  (performance: `kdefect bench`)

main.add_command(bench)


if __name__ == "__main__":
    main()
