"""Search -> select -> hls4ml export -> verify for the JSC recipes and digits-mlp.

Each model is trained briefly (JSC: on the synthetic JSC-format file of tests/conftest.py),
searched over two enqueued points, an all-8-bit one and a mixed 2..8-bit one (a different
width per layer), and both are selected and exported with ``--format hls4ml --verify``: the
compiled C++ emulation must equal onnxruntime on every test-split output.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import onnx
import pytest
from click.testing import CliRunner

from onnxopt.cli import main
from tests.fpga.helpers import gemm_names, mixed_config, need_extra

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("fpga_extra")]
JSC = ("jsc-tiny", "jsc-toy", "jsc-three-linear-layers", "jsc-s")


@pytest.fixture(scope="module")
def fpga_extra():
    need_extra()


@pytest.fixture
def base_model(exported_recipe, jsc_parquet, tmp_path):
    def make(recipe: str) -> tuple[Path, str]:
        if recipe == "digits-mlp":
            return exported_recipe(recipe), "digits"
        from onnxopt.data import load_dataset
        from onnxopt.exporters.torch_onnx import export_module
        from onnxopt.models.training import train

        trained = train(recipe, load_dataset(str(jsc_parquet)), epochs=2, seed=0, progress=False)
        path = tmp_path / f"{recipe}.onnx"
        return export_module(trained.module, trained.input_shape, path).path, str(jsc_parquet)

    return make


def search_config(model: Path, data: str, names: list[str]) -> str:
    mixed = mixed_config(names)["by_name"]
    eight = {key: 8 for key in ("data_in_width", "weight_width", "bias_width")}
    lines = [f'[model]\nonnx = "{model}"\n[data]\ndataset = "{data}"']
    points: list[dict] = [{}, {}]
    for name in names:
        lines.append(f'[search.quantization.by_name."{name}"]')
        for key, value in mixed[name].items():
            lines.append(f"{key} = {sorted({8, value})}")
            if value != 8:  # one choice is a fixed key, not a search parameter
                points[0][f"q.by_name.{name}.{key}"] = 8
                points[1][f"q.by_name.{name}.{key}"] = value
    assert set(eight) == set(mixed[names[0]])
    enqueue = ", ".join("{" + ", ".join(f'"{k}" = {v}' for k, v in p.items()) + "}" for p in points)
    lines.append(
        f'[search.strategy]\nsampler = "random"\nn_trials = 2\nenqueue = [{enqueue}]\n'
        "[search.metrics.accuracy]\n[search.metrics.average_bitwidth]"
    )
    return "\n".join(lines) + "\n"


@pytest.mark.parametrize("recipe", [*JSC, "digits-mlp"])
def test_search_select_hls4ml_verify(recipe, base_model, tmp_path):
    model, data = base_model(recipe)
    config = tmp_path / "s.toml"
    config.write_text(search_config(model, data, gemm_names(onnx.load(model))))
    run = tmp_path / "run"
    runner = CliRunner()
    result = runner.invoke(main, ["search", str(config), "--run-dir", str(run), "--no-progress",
                                  "--no-export"])  # fmt: skip
    assert result.exit_code == 0, result.output
    for goal, label in (("max", "8-bit"), ("min", "mixed")):
        out = tmp_path / label
        rule = f"{goal} average_bitwidth"
        result = runner.invoke(main, ["select", str(run), "--rule", rule, "--format", "hls4ml",
                                      "--verify", "-o", str(out)])  # fmt: skip
        assert result.exit_code == 0, result.output
        match = re.search(r"hls4ml: (\S+); (\d+)/(\d+) outputs exact", result.output)
        assert match and match.group(2) == match.group(3), result.output
        report = json.loads((Path(match.group(1)) / "precision.json").read_text())
        assert report["verify"]["all_exact"] and report["verify"]["max_abs_diff"] == 0.0
        widths = {row["types"]["weight"] for row in report["layers"] if row["class"] == "Dense"}
        if label == "8-bit":
            assert all(w.startswith("fixed<8,") for w in widths), widths
        else:
            assert len(widths) > 1 or len(gemm_names(onnx.load(model))) == 1, widths
