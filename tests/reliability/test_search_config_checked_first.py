"""Issue 14 item 6: config problems that do not depend on a trial stop the search before its
study exists (they made every trial FAIL while the search exited 0)."""

from __future__ import annotations

import pytest
from reliability_helpers import CHEAP_EVALUATION, assert_one_line

from onnxopt.optimizer.search.study import JOURNAL_FILE

CHEAP = f"""
{CHEAP_EVALUATION}[search.strategy]
sampler = "random"
n_trials = 3
"""


@pytest.fixture()
def config(cli, exported_recipe, tmp_path):
    def write(body: str):
        path = tmp_path / "s.toml"
        path.write_text(f'[model]\nonnx = "{exported_recipe("digits-mlp")}"\n{body}{CHEAP}')
        return path

    return write


def test_an_unknown_by_name_node_stops_before_the_study(cli, config, tmp_path):
    path = config('[search.quantization.by_name."node_Gemm_99"]\nweight_width = [4, 8]\n')
    assert_one_line(cli("search", path, "--run-dir", "run"),
                    "search.quantization.by_name.node_Gemm_99: no node 'node_Gemm_99' in the "
                    "base model", "did you mean")  # fmt: skip
    assert not (tmp_path / "run" / JOURNAL_FILE).exists()


def test_a_by_name_node_onnxopt_does_not_quantize(cli, config, exported_recipe, tmp_path):
    import onnx

    relu = next(n.name for n in onnx.load(exported_recipe("digits-mlp")).graph.node
                if n.op_type == "Relu")  # fmt: skip
    path = config(f'[search.quantization.by_name."{relu}"]\nweight_width = [4, 8]\n')
    assert_one_line(cli("search", path, "--run-dir", "run"), f"node '{relu}' is a Relu",
                    "Gemm, MatMul, Conv")  # fmt: skip
    assert not (tmp_path / "run" / JOURNAL_FILE).exists()


def test_a_by_type_entry_matching_no_node(cli, config, tmp_path):
    path = config("[search.quantization.by_type.conv]\nweight_width = [4, 8]\n")
    assert_one_line(cli("search", path, "--run-dir", "run"),
                    "search.quantization.by_type.conv: the base model has no Conv node",
                    "remove the entry")  # fmt: skip
    assert not (tmp_path / "run" / JOURNAL_FILE).exists()


def test_fraction_widths_out_of_bounds_stop_at_load(cli, config, tmp_path):
    for frac in (200, -200):
        path = config(f"[search.quantization.by_type.linear]\nweight_frac_width = [{frac}, 4]\n"
                      "weight_width = [4, 8]\n")  # fmt: skip
        assert_one_line(cli("search", path, "--run-dir", "run"), "weight_frac_width")
    assert not (tmp_path / "run").exists()
