"""report.html of a search: self-contained, raw values, every pair plotted, quantize_static
measured like onnxruntime's own tool does and only once."""

from __future__ import annotations

import json
import re
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import onnx
import onnxruntime as ort
import optuna
import pytest

from onnxopt.config.search import SearchConfig
from onnxopt.optimizer.search import reference_points as refs_module
from onnxopt.optimizer.search.study import STUDY_NAME, load_study


def _html(run: Path) -> str:
    return (run / "report.html").read_text(encoding="utf-8")


def _plot(page: str, i: int) -> str:
    return re.search(rf'<figure class="plot" id="plot{i}">(.*?)</figure>', page, re.S).group(1)


def _group(svg: str, gid: str) -> str | None:
    found = re.search(rf'<g id="{gid}">(.*?)</g>', svg, re.S)
    return None if found is None else found.group(1)


def test_report_is_one_small_offline_file(report_run):
    page = _html(report_run)
    assert len(page.encode()) < 1_000_000
    assert "<script" not in page and "<link" not in page and "src=" not in page
    assert not re.search(r'(href="|url\()(https?:|//)', page)  # nothing fetched
    assert not list(report_run.glob("pareto.html")) and not list(report_run.glob("pareto.png"))


def test_every_pair_of_metrics_is_plotted_with_kinds_apart(report_run):
    page = _html(report_run)
    titles = re.findall(r"<text[^>]*>([a-z_0-9]+ vs [a-z_0-9]+)", page)
    assert sorted(titles) == ["latency_b256 vs accuracy", "latency_b256 vs size",
                              "size vs accuracy"]  # fmt: skip
    report = json.loads((report_run / "report.json").read_text())
    for i in range(3):
        svg = _plot(page, i)
        pareto = _group(svg, f"plot{i}-pareto")
        assert pareto is not None and pareto.count("<use") == len(report["best"])
        for kind in ("fp32", "quantize_static"):
            assert _group(svg, f"plot{i}-{kind}").count("<use") == 1, (i, kind)
    # the two 2-bit weight points lose far more than 2 %: infeasible, never timed, so they
    # appear in the plot without latency only; screening stopped them on part of the split,
    # so they are drawn at the accuracy they could at best have had
    assert _group(_plot(page, 0), "plot0-infeasible").count("<use") == 2
    assert "2 infeasible: 2 by accuracy_drop (2 stopped early by screening)" in page


def test_plots_and_table_show_raw_values_not_scaled_ones(report_run):
    page = _html(report_run)
    # size has scale 0.001 in the config: scaled values would be 10..30, raw ones 10^4
    ticks = [float(t) for t in re.findall(r"<text[^>]*>(\d+(?:\.\d+)?)</text>", _plot(page, 0))]
    assert max(ticks) >= 10_000
    study = load_study(f"{report_run}/study.journal", STUDY_NAME)
    for row in json.loads((report_run / "report.json").read_text())["best"]:
        metrics = study.trials[row["number"]].user_attrs["metrics"]
        cells = re.search(rf'<tr class="pareto" id="trial-{row["number"]}">(.*?)</tr>', page)
        text = cells.group(1)
        assert f"{metrics['accuracy']:.4f}" in text and f"{int(metrics['size']):,} B" in text
        export = row["export"]
        assert f"{export['size_bytes']:,} B" in text
        for suffix in (".onnx", ".ort", ".card.md", ".card.json"):
            name = f"pareto/trial_{row['number']:04d}{suffix}"
            assert f'href="{name}"' in text and (report_run / name).is_file(), name


def _independent_quantize_static(base: Path, calibration: np.ndarray, out: Path) -> Path:
    """onnxruntime's documented flow, called directly: pre-process, then quantize_static."""
    from onnxruntime.quantization import (
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quant_pre_process,
        quantize_static,
    )

    class Reader:
        def __init__(self):
            self.batches = iter(np.array_split(calibration, 3))

        def get_next(self):
            batch = next(self.batches, None)
            return None if batch is None else {"x": batch}

    prepared = out.with_name("prepared.onnx")
    quant_pre_process(str(base), str(prepared))
    quantize_static(str(prepared), str(out), Reader(), quant_format=QuantFormat.QDQ,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                    per_channel=False, calibrate_method=CalibrationMethod.MinMax)  # fmt: skip
    return out


def test_quantize_static_point_is_onnxruntimes_model_measured(report_run, digits, tmp_path):
    study = load_study(f"{report_run}/study.journal", STUDY_NAME)
    point = study.user_attrs["reference_points"]["quantize_static"]
    ours = onnx.load(point["path"])
    base = Path(study.user_attrs["config"]["model"]["onnx"])  # the search's model file
    theirs = onnx.load(str(_independent_quantize_static(
        base, digits.calibration.x, tmp_path / "theirs.onnx")))  # fmt: skip
    assert [n.op_type for n in ours.graph.node] == [n.op_type for n in theirs.graph.node]
    assert "QuantizeLinear" in {n.op_type for n in theirs.graph.node}
    for a, b in zip(ours.graph.initializer, theirs.graph.initializer, strict=True):
        np.testing.assert_array_equal(onnx.numpy_helper.to_array(a),
                                      onnx.numpy_helper.to_array(b))  # fmt: skip
    session = ort.InferenceSession(theirs.SerializeToString(), providers=["CPUExecutionProvider"])
    for split, key in ((digits.val, "validation"), (digits.test, "test")):
        (logits,) = session.run(None, {"x": split.x.astype(np.float32)})
        assert point[key]["accuracy"] == pytest.approx(np.mean(logits.argmax(1) == split.y))
    assert point["test"]["size"] == Path(point["path"]).stat().st_size
    assert point["feasible"] is (point["constraints"]["accuracy_drop"] <= 0)
    page = _html(report_run)
    row = re.search(r'<tr class="reference" id="ref-quantize_static">(.*?)</tr>', page).group(1)
    assert f"{int(point['test']['size']):,} B" in row and 'href="quantize_static.onnx"' in row


def _result(run: Path, quantize_static: bool):
    """A finished search as reference_points reads it, with no model to measure anything."""
    stored = load_study(f"{run}/study.journal", STUDY_NAME)
    config = SearchConfig.model_validate(stored.user_attrs["config"])
    search = config.search.model_copy(
        update={"report": config.search.report.model_copy(
            update={"quantize_static": quantize_static})}
    )  # fmt: skip
    study = optuna.create_study()
    study.set_user_attr("reference_points", stored.user_attrs["reference_points"])
    sha = stored.user_attrs["reference_points"]["base_sha256"]
    context = SimpleNamespace(config=config.model_copy(update={"search": search}),
                              base_sha256=lambda: sha, run_dir=run)  # fmt: skip
    return SimpleNamespace(context=context, study=study, baseline=stored.user_attrs["baseline"])


def test_reference_points_are_measured_once_and_can_be_turned_off(report_run, monkeypatch):
    def refuse(*_, **__):
        raise AssertionError("measured again")

    monkeypatch.setattr(refs_module, "quantize_static_ort", refuse)
    monkeypatch.setattr(refs_module, "_measure", refuse)
    points = refs_module.reference_points(_result(report_run, quantize_static=True))
    assert set(points) == {"fp32", "quantize_static"}
    assert refs_module.reference_points(_result(report_run, quantize_static=False)).keys() == {
        "fp32"
    }


def test_quantize_static_key_is_documented():
    from onnxopt.config import search

    readme = (Path(__file__).parents[2] / "README.md").read_text()
    assert "quantize_static = true" in search.__doc__
    assert "`[search.report] quantize_static = false`" in readme
