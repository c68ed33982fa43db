"""Training on several devices or machines with TensorFlow's own ``tf.distribute`` strategies.

``get_strategy`` picks the strategy by name; ``training.fit`` builds and
compiles the model inside ``strategy.scope()`` and trains it with
``fit_model``. The configured batch size is the **global** batch: the
dataset is batched with it and ``tf.distribute`` splits every batch across
the replicas.

Why the update equals the single-device update for the same global batch:
``SegDecNet.train_step`` sums the per-image losses of its (per-replica)
batch, and Keras' optimizer all-reduces the gradients across replicas with
SUM, so the replicas' sums add up to the gradient of the global-batch sum.
``loss_reduction="mean"`` divides by local batch × replicas, i.e. by the
global batch. The logged losses are means of per-image losses kept in
``keras.metrics.Mean`` trackers, whose totals and counts are summed over the
replicas, so they are not divided by the replica count either.

``MultiWorkerMirroredStrategy`` cannot be used with ``Model.fit`` in Keras
3.15 / TF 2.21 (keras-team/keras#20585: ``fit`` fails in
``_maybe_symbolic_build``), so ``fit_model`` drives the very same
``model.train_step`` with ``strategy.run`` in a small loop (``custom_fit``)
that calls the usual Keras callbacks.

Example:
>>> strategy = get_strategy("none")
>>> strategy.num_replicas_in_sync
1
"""

import atexit
import json
import os
import shutil
import tempfile
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from kdefect.config import STRATEGIES
from kdefect.errors import InputError

_MULTI_WORKER = []  # the process's one MultiWorkerMirroredStrategy (it can only be set up once)


def get_strategy(name="auto", devices=None, batch_size=None):
    """The ``tf.distribute`` strategy for a ``--strategy`` name.

    - ``none``: the default strategy (one device).
    - ``mirrored``: ``tf.distribute.MirroredStrategy`` over ``devices``, or
      over all visible GPUs, or, without GPUs, over all logical CPU devices
      (normally one; tests split the CPU into two).
    - ``auto``: ``mirrored`` when more than one GPU is visible (and the
      global ``batch_size``, if given, splits evenly over them), else ``none``.
    - ``multi-worker``: ``tf.distribute.MultiWorkerMirroredStrategy``, with the
      cluster and this process's role read from the ``TF_CONFIG`` environment
      variable. It must be created before TensorFlow runs any operation, and
      only once per process (later calls return the same object).

    Example:
    >>> get_strategy("auto").num_replicas_in_sync  # on a machine with at most one GPU
    1
    """
    if name not in STRATEGIES:
        raise InputError(f"unknown strategy {name!r}; expected one of {', '.join(STRATEGIES)}")
    if name == "multi-worker":
        return _multi_worker_strategy()
    if name == "none":
        return tf.distribute.get_strategy()
    gpus = tf.config.list_physical_devices("GPU")
    if name == "auto":
        several = len(gpus) > 1 and (batch_size is None or batch_size % len(gpus) == 0)
        return tf.distribute.MirroredStrategy() if several else tf.distribute.get_strategy()
    if devices is None and not gpus:
        devices = [d.name for d in tf.config.list_logical_devices("CPU")]
    return tf.distribute.MirroredStrategy(devices)


def cluster_spec():
    """The parsed ``TF_CONFIG`` (``{"cluster": ..., "task": ...}``); ``InputError`` when missing or bad.

    Example:
    >>> import os
    >>> os.environ["TF_CONFIG"] = '{"cluster": {"worker": ["host1:12345", "host2:12345"]},'\\
    ...     ' "task": {"type": "worker", "index": 1}}'
    >>> cluster_spec()["task"]
    {'type': 'worker', 'index': 1}
    >>> del os.environ["TF_CONFIG"]
    """
    text = os.environ.get("TF_CONFIG")
    if not text:
        raise InputError(
            "--strategy multi-worker needs the TF_CONFIG environment variable on every machine, e.g. "
            'TF_CONFIG=\'{"cluster": {"worker": ["host1:12345", "host2:12345"]}, '
            '"task": {"type": "worker", "index": 0}}\''
        )
    try:
        spec = json.loads(text)
    except ValueError as err:
        raise InputError(f"TF_CONFIG is not valid JSON ({err})") from None
    cluster, task = (spec.get("cluster"), spec.get("task")) if isinstance(spec, dict) else (None, None)
    if not isinstance(cluster, dict) or not cluster or not isinstance(task, dict):
        raise InputError('TF_CONFIG must hold "cluster" (job name -> list of host:port) and "task" '
                         '({"type": ..., "index": ...})')
    kind, index = task.get("type"), task.get("index", 0)
    if kind not in cluster or not isinstance(index, int) or not 0 <= index < len(cluster[kind]):
        raise InputError(f"TF_CONFIG task {task!r} is not in its cluster {cluster!r}")
    return spec


def _multi_worker_strategy():
    if _MULTI_WORKER:
        return _MULTI_WORKER[0]
    cluster_spec()
    try:
        strategy = tf.distribute.MultiWorkerMirroredStrategy()
    except RuntimeError as err:
        raise RuntimeError(
            f"{err}: create the multi-worker strategy (kdefect.distribute.get_strategy) before "
            "TensorFlow runs anything else in this process"
        ) from None
    _MULTI_WORKER.append(strategy)
    return strategy


def is_multi_worker(strategy):
    """Whether ``strategy`` spans several processes (and so cannot use ``Model.fit``).

    Example:
    >>> is_multi_worker(get_strategy("none"))
    False
    """
    return isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy)


def is_chief(strategy):
    """Whether this process writes the run's results: always, except on non-chief workers.

    With several workers the chief is the ``chief`` task if ``TF_CONFIG``
    has one, else worker 0 (as ``tf.distribute`` decides).

    Example:
    >>> is_chief(get_strategy("none"))
    True
    """
    return not is_multi_worker(strategy) or strategy.extended.should_checkpoint


def check_global_batch(batch_size, strategy):
    """The per-replica batch for a global ``batch_size``; ``InputError`` unless it splits evenly.

    Example:
    >>> check_global_batch(4, get_strategy("none"))
    4
    """
    replicas = strategy.num_replicas_in_sync
    if batch_size % replicas:
        raise InputError(
            f"batch size {batch_size} (the global batch) must be a multiple of the number of "
            f"replicas ({replicas}), so every replica gets the same number of images"
        )
    return batch_size // replicas


def worker_output(strategy, output):
    """Where this process writes its run directory: ``output`` on the chief, a temporary folder elsewhere.

    Every worker of a multi-worker run executes the same program (collective
    operations need all of them), but only the chief keeps its files; the
    others' temporary folders are removed when the process exits.

    Example:
    >>> worker_output(get_strategy("none"), "runs/a")
    'runs/a'
    """
    if is_chief(strategy):
        return output
    folder = tempfile.mkdtemp(prefix=f"kdefect-worker{strategy.cluster_resolver.task_id}-")
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    return Path(folder) / Path(output).name


def fit_model(model, dataset, epochs, steps_per_epoch, callbacks=(), verbose="auto", initial_epoch=0):
    """Train ``model`` (built in its strategy's scope) on ``dataset``; return the ``History``.

    ``Model.fit`` for one device and ``MirroredStrategy``; ``custom_fit`` for
    ``MultiWorkerMirroredStrategy`` (see the module docstring). The dataset
    yields global batches, read in order without shuffling.

    Example:
    >>> import numpy as np
    >>> from kdefect import SegDecNet
    >>> from kdefect.data.samples import SampleSet
    >>> from kdefect.data.pipeline import training_dataset
    >>> s = SampleSet.from_arrays(np.zeros((2, 128, 64, 1), np.uint8), [None, np.ones((128, 64))])
    >>> model = SegDecNet(input_shape=(128, 64, 1)); model.compile(keras.optimizers.SGD(0.01))
    >>> history = fit_model(model, training_dataset(s, np.array([[0, 1]]), 2), 1, 1, verbose=0)
    >>> sorted(history.history)
    ['auc', 'cls_loss', 'loss', 'seg_loss']
    """
    if is_multi_worker(model.distribute_strategy):
        return custom_fit(model, dataset, epochs, steps_per_epoch, callbacks, verbose, initial_epoch)
    return model.fit(dataset, epochs=epochs, initial_epoch=initial_epoch, steps_per_epoch=steps_per_epoch,
                     callbacks=list(callbacks), verbose=verbose, shuffle=False)


def custom_fit(model, dataset, epochs, steps_per_epoch, callbacks=(), verbose="auto", initial_epoch=0):
    """A minimal ``fit``: ``strategy.run(model.train_step)`` per global batch, with Keras callbacks.

    Works with any strategy (it is what ``fit_model`` uses for
    ``MultiWorkerMirroredStrategy``). The step itself is ``model.train_step``,
    unchanged; callbacks get the same calls and logs as from ``Model.fit``
    (running metric values after every batch, epoch values at the epoch end;
    metric results are read across all replicas). The dataset's iterator runs
    on across epochs, as ``fit`` with ``steps_per_epoch`` does.

    Example:
    >>> import numpy as np
    >>> from kdefect import SegDecNet
    >>> from kdefect.data.samples import SampleSet
    >>> from kdefect.data.pipeline import training_dataset
    >>> s = SampleSet.from_arrays(np.zeros((2, 128, 64, 1), np.uint8), [None, np.ones((128, 64))])
    >>> model = SegDecNet(input_shape=(128, 64, 1)); model.compile(keras.optimizers.SGD(0.01))
    >>> history = custom_fit(model, training_dataset(s, np.array([[0, 1]]), 2), 1, 1, verbose=0)
    >>> len(history.history["loss"])
    1
    """
    strategy = model.distribute_strategy
    with strategy.scope():
        if not model.optimizer.built:
            model.optimizer.build(model.trainable_variables)
        iterator = iter(strategy.experimental_distribute_dataset(dataset))

    @tf.function
    def train_function(iterator):
        strategy.run(model.train_step, args=(next(iterator),))

    verbose = 1 if verbose == "auto" else verbose
    if not isinstance(callbacks, keras.callbacks.CallbackList):
        callbacks = keras.callbacks.CallbackList(
            list(callbacks), add_history=True, add_progbar=verbose != 0, verbose=verbose,
            epochs=epochs, steps=steps_per_epoch, model=model,
        )
    model.stop_training = False
    callbacks.on_train_begin()
    epoch_logs = None
    for epoch in range(initial_epoch, epochs):
        model.reset_metrics()
        callbacks.on_epoch_begin(epoch)
        logs = {}
        for step in range(steps_per_epoch):
            callbacks.on_train_batch_begin(step)
            train_function(iterator)
            logs = _metric_values(model)
            callbacks.on_train_batch_end(step, logs)
            if model.stop_training:
                break
        epoch_logs = dict(logs)
        callbacks.on_epoch_end(epoch, epoch_logs)
        if model.stop_training:
            break
    callbacks.on_train_end(logs=epoch_logs)
    return model.history


def _metric_values(model):
    """The model's metric results as floats, read (and, across workers, reduced) outside the step."""
    return {name: float(value) for name, value in model.get_metrics_result().items()}


def predict_outputs(model, dataset):
    """``model.predict(dataset)``, but on one device when the model was built for several replicas.

    ``Model.predict`` under a strategy splits every batch across the replicas
    and fails when a replica gets an empty share (a last batch smaller than
    the replica count); under ``MultiWorkerMirroredStrategy`` it also needs
    every worker in lock-step. Prediction is cheap, so a distributed model is
    instead called batch by batch on one device (its variables are read, not
    changed) and the outputs are concatenated, in order.

    Example:
    >>> import numpy as np
    >>> from kdefect import SegDecNet
    >>> model = SegDecNet(input_shape=(128, 64, 1))
    >>> dec, seg = predict_outputs(model, tf.data.Dataset.from_tensors(np.zeros((3, 128, 64, 1), "float32")))
    >>> dec.shape, seg.shape
    ((3, 1), (3, 16, 8, 1))
    """
    if model.distribute_strategy.num_replicas_in_sync == 1 and not is_multi_worker(model.distribute_strategy):
        return model.predict(dataset, verbose=0)
    call = tf.function(lambda images: model(images, training=False), reduce_retracing=True)
    batches = [[t.numpy() for t in call(batch[0] if isinstance(batch, tuple) else batch)] for batch in dataset]
    return tuple(np.concatenate([b[i] for b in batches]) for i in range(len(batches[0])))
