"""`kdefect bench` at a tiny size: the command runs, writes the documented JSON keys, numbers are positive."""

import json

import pytest
from click.testing import CliRunner

from kdefect.bench import EXPORT_FORMATS, REQUIRED_KEYS, count_flops
from kdefect.model import SegDecNet
from kdefect_cli.main import main


def _positive(value):
    return isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0


@pytest.mark.slow
def test_bench_cli_tiny_writes_keys_and_positive_numbers(tmp_path):
    out = tmp_path / "bench.json"
    result = CliRunner().invoke(main, [
        "bench", "--input-size", "128x64", "--steps", "2", "--warmup", "1", "--roof-size", "256",
        "--precision", "auto", "--json", str(out), "-q",
    ])
    assert result.exit_code == 0, result.output
    assert "achieved" in result.output and "roof (matmul)" in result.output
    data = json.loads(out.read_text())
    for key in REQUIRED_KEYS:
        assert key in data, key
    assert data["precision"] in ("float32", "mixed_bfloat16", "mixed_float16")
    assert data["input_size"] == [128, 64]
    for key in REQUIRED_KEYS:
        if key != "precision":
            assert _positive(data[key]), (key, data[key])
    # every export format was written, loaded and timed
    for name in ("keras",) + EXPORT_FORMATS:
        assert "error" not in data["inference"][name], data["inference"][name]
        assert _positive(data["inference"][name]["seconds_per_image"]), name
    assert data["peak_rss_end_mb"] >= data["peak_rss_mb"]
    assert data["achieved_gflops"] == pytest.approx(
        data["flops_per_train_step"] / data["train_step_seconds"] / 1e9)


def test_bench_cli_rejects_bad_size():
    result = CliRunner().invoke(main, ["bench", "--input-size", "100x64", "--no-export"])
    assert result.exit_code == 2
    assert "divisible by 8" in result.output


def test_flops_follow_the_reference_count_and_scale_with_pixels():
    """REFERENCE.md §1.5: about 232 GMAC per 1408x512 image; 1/4 of it at half resolution."""
    full = count_flops(SegDecNet(input_shape=(1408, 512, 1)))
    half = count_flops(SegDecNet(input_shape=(704, 256, 1)))
    assert full["forward_macs"] == pytest.approx(232e9, rel=0.005)
    assert half["forward_macs"] == pytest.approx(full["forward_macs"] / 4, rel=0.01)
    assert half["train_flops"] == 3 * half["forward_flops"] == 6 * half["forward_macs"]
