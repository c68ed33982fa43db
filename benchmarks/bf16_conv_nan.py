"""Reproduce the TensorFlow/oneDNN bfloat16 convolution that returns NaN for finite inputs.

SegDecNet's first decision conv (5x5, 1025 -> 8 channels) diverged bf16 KSDD
training at random epochs. Here that convolution runs on fresh random finite
inputs after the allocator has been filled with NaN, and every non-finite
result is counted. With TF 2.21 on an AVX-512 BF16 CPU, 1025 input channels in
bfloat16 gave non-finite forward outputs in about 4 % of the trials, while
float32 and 1024/1026 channels gave none. This suggests the kernel reads padding
that was never initialised. kdefect therefore keeps that one layer in float32.

Usage::

    python benchmarks/bf16_conv_nan.py --trials 400
"""

import argparse
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def count_non_finite(channels, dtype, trials, height=22, width=8):
    """Trials (out of ``trials``) in which a 5x5 conv of finite inputs returned a non-finite value.

    Example:
    >>> count_non_finite(16, "float32", trials=2)
    0
    """
    import numpy as np
    import tensorflow as tf

    conv = tf.function(lambda x, k: tf.nn.conv2d(x, k, 1, "SAME"))
    bad = 0
    for _ in range(trials):
        junk = tf.cast(tf.fill((4 * height * width * channels + 1000,), float("nan")), dtype)
        del junk  # leave NaN in freed memory, where uninitialised reads would find it
        x = tf.cast(tf.random.normal((1, height, width, channels)), dtype)
        kernel = tf.cast(tf.random.normal((5, 5, channels, 8)) * 0.01, dtype)
        bad += int(not np.isfinite(tf.cast(conv(x, kernel), tf.float32).numpy()).all())
    return bad


def main(argv=None):
    """Print the non-finite counts for bf16/float32 and 1024/1025/1026 channels.

    Example:
    >>> result = main(["--trials", "1"])  # doctest: +ELLIPSIS
    bfloat16 1025 input channels: ... of 1 trials returned non-finite values
    ...
    >>> sorted(result)[0]
    'bfloat16 1024'
    """
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=400)
    args = parser.parse_args(argv)
    result = {}
    for dtype, channels in (("bfloat16", 1025), ("float32", 1025), ("bfloat16", 1024), ("bfloat16", 1026)):
        result[f"{dtype} {channels}"] = count_non_finite(channels, dtype, args.trials)
        print(f"{dtype} {channels} input channels: {result[f'{dtype} {channels}']} of {args.trials} "
              "trials returned non-finite values", flush=True)
    return result


if __name__ == "__main__":
    main()
