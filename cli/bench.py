"""``kdefect bench``: measure training, inference, input pipeline, memory and the matmul roof.

Registered on the ``kdefect`` group by ``cli/main.py``. Shared helpers of
``main.py`` are imported when the command runs, so importing this module
first (or alone) has no circular-import trap.
"""

import functools

import click

from kdefect.config import DATASETS, PRECISIONS

CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


def _main_helpers():
    from . import main

    return main


def _user_errors(fn):
    """``main.user_errors`` (one-line errors, exit 2), looked up at call time."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        return _main_helpers().user_errors(fn)(*args, **kwargs)

    return wrapper


def _parse_size(ctx, param, value):
    return _main_helpers()._parse_size(ctx, param, value)


@click.command(context_settings=CONTEXT)
@click.option("--dataset", type=click.Choice(DATASETS, case_sensitive=False), default="synthetic",
              show_default=True, help="Data to train on (synthetic needs no download; fold 0 of real sets).")
@click.option("--data-dir", type=click.Path(), default=None, help="Local copy of a real dataset.")
@click.option("--scale", type=click.FloatRange(min=0, min_open=True, max=4), default=None,
              help="Scale of the reference size (synthetic: of KSDD's 1408x512; default 0.25).")
@click.option("--input-size", callback=_parse_size, default=None, metavar="HxW",
              help="Explicit input size, both divisible by 8 (overrides --scale), e.g. 704x256.")
@click.option("--precision", type=click.Choice(PRECISIONS), default="auto", show_default=True,
              help="'auto': mixed_bfloat16 on CPUs with AVX-512 BF16/AMX, mixed_float16 on GPUs, else float32.")
@click.option("--steps", type=click.IntRange(min=1), default=5, show_default=True,
              help="Timed training steps (median reported); also timed inference calls (at least 3).")
@click.option("--warmup", type=click.IntRange(min=0), default=2, show_default=True,
              help="Untimed training steps first.")
@click.option("--batch-size", type=click.IntRange(min=1), default=1, show_default=True,
              help="Images per step and per inference call.")
@click.option("--jit/--no-jit", default=False, show_default=True, help="XLA-compile training and inference.")
@click.option("--no-export", is_flag=True,
              help="Skip the SavedModel/TFLite exports (their conversion takes most of a small run).")
@click.option("--roof-size", type=click.IntRange(min=64), default=4096, show_default=True,
              help="Side of the square matrices of the matmul roof.")
@click.option("--json", "json_path", type=click.Path(dir_okay=False), default=None,
              help="Also write the full result as JSON.")
@click.option("-q", "--quiet", is_flag=True, help="No progress lines, only the table.")
@_user_errors
def bench(dataset, data_dir, scale, input_size, precision, steps, warmup, batch_size, jit, no_export,
          roof_size, json_path, quiet):
    """Measure training and inference speed, the input pipeline, memory, and the machine's roof.

    Everything runs in this one process: training steps on the real input
    pipeline (median of --steps after --warmup), inference of the Keras model
    and of each export (SavedModel, TFLite float32/float16/int8), the pipeline
    alone, peak resident memory, FLOPs per step counted from the layer list
    and the achieved fraction of the measured dense matmul throughput (the
    roof) in the same precision.

    \b
    Examples:
      kdefect bench --input-size 704x256 --precision float32 --json f32.json
      kdefect bench --scale 0.5 --precision auto --no-export
      kdefect bench --dataset ksdd --scale 0.5 --data-dir KolektorSDD.zip
    """
    from kdefect.bench import format_table, run_bench
    from kdefect.evaluation import write_json

    result = run_bench(dataset=dataset.lower(), input_size=input_size, scale=scale, precision=precision,
                       steps=steps, warmup=warmup, batch_size=batch_size, jit_compile=jit,
                       export=not no_export, data_dir=data_dir, roof_size=roof_size,
                       log=None if quiet else (lambda msg: click.echo(msg, err=True)))
    click.echo(format_table(result))
    if json_path:
        write_json(json_path, result)
        click.echo(f"wrote {json_path}")
    return result

