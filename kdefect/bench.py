"""Performance benchmark: training, inference, input pipeline, memory and the machine's roof, in one process.

``run_bench`` measures, for one dataset, input size, precision and batch size:

* **training**: the median seconds of ``steps`` SGD steps of ``model.fit`` on
  the real ``tf.data`` pipeline, after ``warmup`` steps (tracing, first
  allocations) that are not counted;
* **inference**: median latency of one batch through the Keras model (a
  ``tf.function`` in the benchmark's precision, no pre/post-processing) and
  through each exported format (SavedModel and TFLite float32/float16/int8,
  written by ``kdefect.export`` from the float32 copy of the model, called
  with uint8 images exactly as served);
* **input pipeline** on its own: images/s of ``training_dataset`` with no
  model attached, and the fraction of a training step it would take;
* **peak resident memory** (``resource.getrusage``, a high-water mark) after
  loading the data, after training (``peak_rss_mb``: what training needs) and
  at the end (exports and their conversion included);
* **FLOPs** per training step counted from the layer list and the achieved
  GFLOP/s, against the **roof**: the measured throughput of a large dense
  ``tf.linalg.matmul`` in the same compute dtype.

FLOP rule (``count_flops``): a Conv2D costs ``H_out·W_out·kh·kw·C_in·C_out``
multiply-accumulates per image ('same' padding counted in full, as the kernels
compute it), a Dense ``in·out``; one MAC = 2 FLOPs. Pooling, FeatureNorm,
ReLU, concatenation and the losses are elementwise (< 0.5 % of the total)
and not counted. A training step costs **3 × forward**: the forward pass,
the gradient with respect to the activations and the gradient with respect
to the weights each cost about one forward pass (the first conv needs no
input gradient and the gradient-flow adjustment skips a little of the
decision-to-segmentation path, so 3× slightly over-counts, by < 1 %).

Example:
>>> result = run_bench(input_size=(128, 64), steps=2, warmup=1, export=False, roof_size=256)
>>> result["train_seconds_per_image"] > 0 and result["roof_gflops"] > 0
True
"""

import math
import os
import platform
import resource
import statistics
import tempfile
import time
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from kdefect.errors import InputError

TFLITE_QUANTIZE = {"tflite-float32": None, "tflite-float16": "float16", "tflite-int8": "int8"}
EXPORT_FORMATS = ("saved_model",) + tuple(TFLITE_QUANTIZE)
REQUIRED_KEYS = (
    "train_seconds_per_image",
    "infer_seconds_per_image",
    "pipeline_images_per_second",
    "peak_rss_mb",
    "flops_per_train_step",
    "achieved_gflops",
    "roof_gflops",
    "precision",
)
KSDD_REFERENCE_SIZE = (1408, 512)  # synthetic --scale is relative to KSDD's reference size


# ------------------------------------------------------------------ counting
def count_flops(model):
    """Multiply-accumulates and FLOPs of a model per image, counted from its layer list.

    Returns ``{"forward_macs", "forward_flops", "train_flops"}`` per image, with
    FLOPs = 2 × MACs and training = 3 × forward (see the module docstring).
    Only Conv2D and Dense layers are counted.

    Example:
    >>> from kdefect.model import SegDecNet
    >>> macs = count_flops(SegDecNet(input_shape=(1408, 512, 1)))["forward_macs"]
    >>> round(macs / 1e9)  # REFERENCE.md §1.5: about 232 GMAC at 1408x512
    232
    """
    macs = 0
    for layer in model.layers:
        if isinstance(layer, keras.layers.Conv2D):
            kh, kw, c_in, c_out = layer.kernel.shape
            _, h_out, w_out, _ = layer.output.shape
            macs += h_out * w_out * kh * kw * c_in * c_out
        elif isinstance(layer, keras.layers.Dense):
            c_in, c_out = layer.kernel.shape
            macs += c_in * c_out
    forward = 2 * macs
    return {"forward_macs": int(macs), "forward_flops": int(forward), "train_flops": int(3 * forward)}


def compute_dtype(precision):
    """The dtype the heavy layers compute in under a Keras dtype policy name.

    Example:
    >>> compute_dtype("mixed_bfloat16"), compute_dtype("float32")
    ('bfloat16', 'float32')
    """
    return keras.DTypePolicy(precision).compute_dtype


# ------------------------------------------------------------------- timing
def peak_rss_mb():
    """Peak resident set size of this process so far, in MB (Linux ``ru_maxrss`` is in KiB).

    Example:
    >>> peak_rss_mb() > 0
    True
    """
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024.0 * 1024.0) if platform.system() == "Darwin" else peak / 1024.0


def time_calls(fn, repeats, warmup=1):
    """Seconds of each of ``repeats`` calls of ``fn()`` after ``warmup`` uncounted calls.

    ``fn`` must block until its work is done (return NumPy values, not pending tensors).

    Example:
    >>> len(time_calls(lambda: sum(range(100)), repeats=3))
    3
    """
    for _ in range(warmup):
        fn()
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        seconds.append(time.perf_counter() - start)
    return seconds


def matmul_roof(dtype="float32", size=4096, repeats=5):
    """Measured dense matrix-multiply throughput in GFLOP/s: median of ``repeats`` ``size``² products.

    This is the practical peak of the machine's BLAS/oneDNN kernels in that
    dtype, the roof the model's achieved GFLOP/s is compared with.

    Example:
    >>> matmul_roof("float32", size=256, repeats=3) > 0
    True
    """
    dtype = tf.as_dtype(dtype)
    a = tf.cast(tf.random.stateless_uniform((size, size), seed=(1, 2)), dtype)
    b = tf.cast(tf.random.stateless_uniform((size, size), seed=(3, 4)), dtype)
    product = tf.function(lambda x, y: tf.reduce_sum(tf.cast(tf.linalg.matmul(x, y)[:1, :1], tf.float32)))
    seconds = time_calls(lambda: product(a, b).numpy(), repeats, warmup=1)
    return 2.0 * size**3 / statistics.median(seconds) / 1e9


class _StepTimer(keras.callbacks.Callback):
    """Wall time of each training batch (``fit`` pythonifies the logs, so the step has finished)."""

    def __init__(self):
        super().__init__()
        self.seconds = []

    def on_train_batch_begin(self, batch, logs=None):
        self._start = time.perf_counter()

    def on_train_batch_end(self, batch, logs=None):
        self.seconds.append(time.perf_counter() - self._start)


# --------------------------------------------------------------------- parts
def bench_config(dataset="synthetic", input_size=None, scale=None, precision="auto", batch_size=1,
                 jit_compile=False, data_dir=None):
    """The ``TrainConfig`` a benchmark runs: the dataset's settings, fold 0, the given size and precision.

    For ``synthetic``, ``scale`` is relative to KSDD's reference size 1408x512
    (0.5 -> 704x256), so the synthetic set stands in for KSDD without a download.

    Example:
    >>> bench_config("synthetic", scale=0.5).input_size
    (704, 256)
    """
    from kdefect.config import load_config

    if dataset == "synthetic" and input_size is None:
        scale = 0.25 if scale is None else scale
        input_size = tuple(8 * max(1, round(v * scale / 8)) for v in KSDD_REFERENCE_SIZE)
    batch_size = int(batch_size)
    overrides = dict(input_size=input_size, scale=scale, precision=precision, batch_size=batch_size,
                     jit_compile=jit_compile, data_dir=data_dir, fold=0)
    if dataset == "synthetic":
        overrides["num_samples"] = max(16, 4 * batch_size)
    return load_config(dataset, **overrides)


def _training_batches(splits, config, batches):
    from kdefect.data.pipeline import training_dataset
    from kdefect.data.sampling import epoch_schedule

    per_epoch = 2 * int(splits.train.is_positive.sum()) // config.batch_size
    if per_epoch == 0:
        raise InputError(f"batch size {config.batch_size} is larger than an epoch of the training set")
    epochs = max(1, math.ceil(batches / per_epoch))
    schedule, _ = epoch_schedule(splits.train.is_positive, epochs, config.batch_size, seed=config.seed)
    dataset = training_dataset(splits.train, schedule, config.batch_size, config.cls_target, config.weighted)
    return dataset.take(batches)


def bench_pipeline(splits, config, seconds=1.0, max_batches=2000):
    """Images/s of the training input pipeline alone (no model), after one warm-up batch.

    Reads batches for about ``seconds`` (at most ``max_batches``).

    Example:
    >>> from kdefect.data.datasets import load_splits
    >>> cfg = bench_config(input_size=(128, 64))
    >>> bench_pipeline(load_splits(cfg), cfg, seconds=0.2) > 0
    True
    """
    dataset = _training_batches(splits, config, max_batches + 1)
    iterator = iter(dataset)
    next(iterator)
    start, images = time.perf_counter(), 0
    for images_batch, _ in iterator:
        images += int(images_batch.shape[0])
        if time.perf_counter() - start >= seconds:
            break
    return images / (time.perf_counter() - start)


def bench_training(model, splits, config, steps, warmup):
    """Per-step seconds of ``model.fit`` on the training pipeline; the first ``warmup`` steps are dropped.

    Example:
    >>> from kdefect.data.datasets import load_splits
    >>> from kdefect.training import build_model
    >>> cfg = bench_config(input_size=(128, 64), precision="float32")
    >>> len(bench_training(build_model(cfg, (128, 64, 1)), load_splits(cfg), cfg, steps=2, warmup=1))
    2
    """
    dataset = _training_batches(splits, config, steps + warmup)
    timer = _StepTimer()
    model.seg_loss_weight.assign(0.5)  # both loss terms active, as mid-run
    model.fit(dataset, epochs=1, steps_per_epoch=steps + warmup, callbacks=[timer], verbose=0, shuffle=False)
    return timer.seconds[warmup:]


def _stats(seconds, batch_size):
    latency = statistics.median(seconds)
    return {
        "latency_seconds": latency,
        "seconds_per_image": latency / batch_size,
        "images_per_second": batch_size / latency,
        "repeats": len(seconds),
    }


def bench_exports(model, images, representative, repeats, formats=EXPORT_FORMATS, log=None):
    """Export ``model`` to each format in a temporary folder and time the served call on uint8 ``images``.

    Returns ``{format: {latency_seconds, seconds_per_image, images_per_second,
    export_seconds}}``; a format that fails to export or run gets ``{"error": message}``.

    Example:
    >>> from kdefect.model import SegDecNet
    >>> out = bench_exports(SegDecNet(input_shape=(128, 64, 1)), np.zeros((1, 128, 64, 1), np.uint8),
    ...                     None, repeats=2, formats=("saved_model",))
    >>> out["saved_model"]["seconds_per_image"] > 0
    True
    """
    from kdefect.export import ExportedModel, export_saved_model, export_tflite

    results = {}
    with tempfile.TemporaryDirectory(prefix="kdefect-bench-") as tmp:
        saved_model = Path(tmp) / "saved_model"
        for name in formats:
            if log:
                log(f"exporting and timing {name}")
            start = time.perf_counter()
            try:
                if name == "saved_model" or not saved_model.exists():
                    export_saved_model(model, saved_model)
                if name == "saved_model":
                    path = saved_model
                else:
                    quantize = TFLITE_QUANTIZE[name]
                    path = export_tflite(saved_model, Path(tmp) / f"{name}.tflite", quantize=quantize,
                                         representative_images=representative if quantize == "int8" else None)
                export_seconds = time.perf_counter() - start
                exported = ExportedModel(path)
                seconds = time_calls(lambda: exported(images), repeats)
                results[name] = {**_stats(seconds, len(images)), "export_seconds": export_seconds}
            except Exception as err:  # noqa: BLE001 - one failed format must not lose the others
                results[name] = {"error": f"{type(err).__name__}: {str(err).splitlines()[0][:300]}"}
    return results


def machine_info():
    """CPU model, usable cores, load average and library versions, for the record.

    Example:
    >>> sorted(machine_info())[:2]
    ['cores', 'cpu']
    """
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {
        "cpu": cpu,
        "cores": cores,
        "gpus": len(tf.config.list_physical_devices("GPU")),
        "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "python": platform.python_version(),
    }


# ---------------------------------------------------------------------- main
def run_bench(dataset="synthetic", input_size=None, scale=None, precision="auto", steps=5, warmup=2,
              batch_size=1, jit_compile=False, export=True, data_dir=None, roof_size=4096,
              pipeline_seconds=1.0, log=None):
    """Measure training, inference, pipeline, memory and the matmul roof in this process; return a dict.

    Args:
        dataset: ``synthetic`` (default; generated, no download) or a real
            dataset name (fold 0 of its paper split is loaded).
        input_size: (H, W); or ``scale`` of the dataset's reference size
            (synthetic: of KSDD's 1408x512; default 0.25 -> 352x128).
        precision: ``auto``, ``float32``, ``mixed_bfloat16`` or ``mixed_float16``.
        steps: timed training steps (median reported); also the number of
            timed inference calls per format (at least 3).
        warmup: untimed training steps first (tracing, allocation).
        batch_size: images per step and per inference call.
        jit_compile: XLA for the training step and the Keras inference call.
        export: also export and time SavedModel and TFLite float32/float16/int8
            (slow at large sizes: int8 calibration runs the float model).
        data_dir: local copy of a real dataset.
        roof_size: side of the square matrices of the matmul roof.
        pipeline_seconds: how long to read the pipeline alone.
        log: optional ``print``-like progress callback.

    Returns a JSON-ready dict with at least ``REQUIRED_KEYS``; see
    ``format_table``. The process-wide Keras dtype policy is restored.

    Example:
    >>> r = run_bench(input_size=(128, 64), steps=2, warmup=1, export=False, roof_size=256)
    >>> sorted(k for k in REQUIRED_KEYS if r[k] is not None) == sorted(REQUIRED_KEYS)
    True
    """
    from kdefect.data.datasets import load_splits
    from kdefect.training import build_model, resolve_precision

    if steps < 1 or warmup < 0 or batch_size < 1:
        raise InputError("steps and batch size must be >= 1 and warmup >= 0")
    log = log or (lambda *args: None)
    saved_policy = keras.config.dtype_policy()
    config = bench_config(dataset, input_size, scale, precision, batch_size, jit_compile, data_dir)
    policy = resolve_precision(config.precision)
    result = {
        "dataset": config.dataset,
        "precision_requested": precision,
        "precision": policy,
        "compute_dtype": compute_dtype(policy),
        "jit_compile": bool(jit_compile),
        "batch_size": batch_size,
        "steps": steps,
        "warmup": warmup,
        "machine": machine_info(),
    }
    try:
        start = time.perf_counter()
        splits = load_splits(config)
        input_shape = splits.train.input_shape
        result["input_size"] = list(input_shape[:2])
        result["load_seconds"] = time.perf_counter() - start
        result["peak_rss_after_load_mb"] = peak_rss_mb()  # TF runtime + the data, before any model
        log(f"{config.dataset} {input_shape[0]}x{input_shape[1]}: {len(splits.train)} training images "
            f"loaded in {result['load_seconds']:.1f} s")

        log("input pipeline alone")
        result["pipeline_images_per_second"] = bench_pipeline(splits, config, pipeline_seconds)

        log(f"training: {warmup} warm-up + {steps} timed steps ({policy}, XLA {'on' if jit_compile else 'off'})")
        keras.utils.set_random_seed(config.seed)
        model = build_model(config, input_shape)
        seconds = bench_training(model, splits, config, steps, warmup)
        step = statistics.median(seconds)
        flops = count_flops(model)
        result.update(
            train_step_seconds=step,
            train_step_seconds_all=seconds,
            train_seconds_per_image=step / batch_size,
            train_images_per_second=batch_size / step,
            forward_macs_per_image=flops["forward_macs"],
            flops_per_train_step=flops["train_flops"] * batch_size,
            achieved_gflops=flops["train_flops"] * batch_size / step / 1e9,
        )
        result["pipeline_fraction_of_step"] = (batch_size / result["pipeline_images_per_second"]) / step
        result["peak_rss_mb"] = peak_rss_mb()

        log("inference: Keras model")
        batch = _images(splits.train, max(batch_size, 4))
        representative, batch = batch[:4], batch[:batch_size]  # int8 calibration: a few training images
        x = tf.constant(batch.astype(np.float32) / 255.0)
        forward = tf.function(lambda images: model(images, training=False)[0], jit_compile=bool(jit_compile))
        repeats = max(3, steps)
        keras_stats = _stats(time_calls(lambda: forward(x).numpy(), repeats), batch_size)
        result["inference"] = {"keras": keras_stats}
        result["infer_seconds_per_image"] = keras_stats["seconds_per_image"]
        result["infer_images_per_second"] = keras_stats["images_per_second"]
        result["forward_gflops"] = flops["forward_flops"] / keras_stats["seconds_per_image"] / 1e9

        log(f"roof: {compute_dtype(policy)} matmul {roof_size}x{roof_size}")
        result["roof_dtype"] = compute_dtype(policy)
        result["roof_matrix_size"] = roof_size
        result["roof_gflops"] = matmul_roof(result["roof_dtype"], roof_size)
        result["roof_fraction"] = result["achieved_gflops"] / result["roof_gflops"]
        result["forward_roof_fraction"] = result["forward_gflops"] / result["roof_gflops"]

        if export:
            result["inference"].update(bench_exports(model, batch, representative, repeats, log=log))
        timed = [v["seconds_per_image"] for k, v in result["inference"].items() if k != "keras" and "error" not in v]
        result["best_export_seconds_per_image"] = min(timed) if timed else None
        result["peak_rss_end_mb"] = peak_rss_mb()
        result["machine"]["load_average_end"] = list(os.getloadavg()) if hasattr(os, "getloadavg") else None
    finally:
        keras.config.set_dtype_policy(saved_policy)
    return result


def _images(samples, count):
    """The first ``count`` uint8 images of a sample table (cycling if it is shorter)."""
    from kdefect.evaluation import sample_image

    return np.stack([sample_image(samples, i % len(samples)) for i in range(count)])


# ------------------------------------------------------------------- output
def _fmt_seconds(value):
    return "n/a" if value is None else (f"{value * 1000:.1f} ms" if value < 1 else f"{value:.3f} s")


def format_table(result):
    """A plain-text table of a ``run_bench`` result.

    Example:
    >>> print(format_table({"precision": "float32", "train_seconds_per_image": 0.5}).splitlines()[0])
    kdefect bench: ? ?, float32, batch ?, XLA off
    """
    size = "x".join(map(str, result.get("input_size", ["?"])))
    lines = [
        f"kdefect bench: {result.get('dataset', '?')} {size}, {result['precision']}, "
        f"batch {result.get('batch_size', '?')}, XLA {'on' if result.get('jit_compile') else 'off'}",
    ]
    if "machine" in result:
        m = result["machine"]
        load = f", load average {m['load_average'][0]:.1f}" if m.get("load_average") else ""
        lines.append(f"machine: {m['cpu']}, {m['cores']} cores, {m['gpus']} GPUs, TF {m['tensorflow']}{load}")
    rows = [("measure", "value", "note")]

    def add(name, value, note=""):
        rows.append((name, value, note))

    if "train_step_seconds" in result:
        add("training step (median)", _fmt_seconds(result["train_step_seconds"]),
            f"{result['steps']} steps after {result['warmup']} warm-up")
    if "train_seconds_per_image" in result:
        add("training per image", _fmt_seconds(result["train_seconds_per_image"]),
            f"{result.get('train_images_per_second', 0):.2f} images/s" if "train_images_per_second" in result else "")
    if "flops_per_train_step" in result:
        add("FLOPs per training step", f"{result['flops_per_train_step'] / 1e9:.1f} G", "3 x forward, conv/dense")
        add("achieved", f"{result['achieved_gflops']:.1f} GFLOP/s",
            f"{100 * result.get('roof_fraction', float('nan')):.0f} % of roof")
    if "roof_gflops" in result:
        add("roof (matmul)", f"{result['roof_gflops']:.1f} GFLOP/s",
            f"{result['roof_dtype']} {result['roof_matrix_size']}^2")
    for name, stats in result.get("inference", {}).items():
        if "error" in stats:
            add(f"inference {name}", "failed", stats["error"][:60])
        else:
            note = f"{stats['images_per_second']:.2f} images/s"
            if "export_seconds" in stats:
                note += f", export {stats['export_seconds']:.1f} s"
            elif "compute_dtype" in result:
                note += f", {result['compute_dtype']}"
            add(f"inference {name}", _fmt_seconds(stats["seconds_per_image"]) + "/image", note)
    if "pipeline_images_per_second" in result:
        note = ""
        if "pipeline_fraction_of_step" in result:
            note = f"{100 * result['pipeline_fraction_of_step']:.3f} % of a step"
        add("input pipeline alone", f"{result['pipeline_images_per_second']:.0f} images/s", note)
    if "peak_rss_mb" in result:
        notes = []
        if "peak_rss_after_load_mb" in result:
            notes.append(f"after loading data {result['peak_rss_after_load_mb']:.0f} MB")
        if "peak_rss_end_mb" in result:
            notes.append(f"end of run {result['peak_rss_end_mb']:.0f} MB")
        add("peak RSS after training", f"{result['peak_rss_mb']:.0f} MB", ", ".join(notes))
    widths = [max(len(str(r[i])) for r in rows) for i in range(3)]
    lines.append("  ".join(str(v).ljust(w) for v, w in zip(rows[0], widths)).rstrip())
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(str(v).ljust(w) for v, w in zip(r, widths)).rstrip() for r in rows[1:]]
    return "\n".join(line for line in lines if line)
