"""``[search.export] formats``: the Pareto set as ONNX, QONNX and hls4ml projects."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from onnxopt.cli import main
from tests.fpga.helpers import need_extra

BODY = """
[search.quantization.by_type.linear]
data_in_width = [4, 8]
weight_width = [3, 8]
[search.strategy]
sampler = "brute-force"
n_trials = 4
[search.metrics.accuracy]
[search.metrics.average_bitwidth]
[search.export]
formats = {formats}
[search.export.hls4ml]
reuse_factor = 8
strategy = "resource"
"""


def test_pareto_set_is_exported_as_qonnx_and_hls4ml(exported_recipe, tmp_path):
    need_extra()
    config = tmp_path / "s.toml"
    body = BODY.format(formats='["onnx", "qonnx", "hls4ml"]')
    config.write_text(f'[model]\nonnx = "{exported_recipe("digits-mlp")}"\n{body}')
    run = tmp_path / "run"
    result = CliRunner().invoke(main, ["search", str(config), "--run-dir", str(run),
                                       "--no-progress"])  # fmt: skip
    assert result.exit_code == 0, result.output
    report = json.loads((run / "report.json").read_text())
    assert report["best"]
    for best in report["best"]:
        fpga = best["export"]["fpga"]
        assert fpga["qonnx"]["check"]["all_exact"]
        precision = json.loads(open(fpga["hls4ml"]["precision"]).read())
        dense = [r for r in precision["layers"] if r["class"] == "Dense"]
        assert {(r["reuse_factor"], r["strategy"]) for r in dense} == {(8, "resource")}
        assert fpga["hls4ml"]["verify"] is None  # verify = false: nothing compiled
    assert not list((run / "pareto").glob("*.ort"))  # "ort" not asked for


@pytest.mark.parametrize(
    ("formats", "message"),
    [('["qonnx"]', "formats must include 'onnx'"), ('["onnx", "bitstream"]', "bitstream")],
)
def test_export_formats_are_checked(exported_recipe, tmp_path, formats, message):
    config = tmp_path / "s.toml"
    body = BODY.format(formats=formats)
    config.write_text(f'[model]\nonnx = "{exported_recipe("digits-mlp")}"\n{body}')
    result = CliRunner().invoke(main, ["search", str(config), "--run-dir", str(tmp_path / "r")])
    assert result.exit_code == 2 and message in result.output, result.output
