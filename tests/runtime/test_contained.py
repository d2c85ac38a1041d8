"""Native crashes contained: a model that kills the runtime becomes one line, not a dead
command, and a FAIL trial in a search, which goes on."""

from __future__ import annotations

import ctypes
import signal
import time

import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from onnx import TensorProto, helper, numpy_helper
from optuna.trial import TrialState

from onnxopt.cli import main
from onnxopt.config.search import load_search_config
from onnxopt.errors import EvaluationError
from onnxopt.optimizer.search.run import run_search
from onnxopt.runtime import contained
from onnxopt.runtime.ort import make_session, session_settings
from tests.runtime import native_crash


@pytest.fixture(autouse=True)
def fresh_checks(monkeypatch):
    """Every test starts with no model checked (the cache would skip the child)."""
    monkeypatch.setattr(contained, "_CHECKED", set())


def _mlp(op: str = "Relu") -> onnx.ModelProto:
    rng = np.random.default_rng(0)
    w = numpy_helper.from_array(rng.standard_normal((64, 10)).astype(np.float32), "w")
    nodes = [helper.make_node(op, ["x"], ["h"]), helper.make_node("MatMul", ["h", "w"], ["y"])]
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 64])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 10])], [w],
    )  # fmt: skip
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)])


def test_a_child_killed_by_a_signal_reports_it_and_this_process_lives():
    assert contained.run_contained(ctypes.string_at, 0) == -signal.SIGSEGV
    assert contained.run_contained(native_crash.segfault) == -signal.SIGSEGV
    assert contained.run_contained(int, "7") == 0
    assert contained.run_contained(int, "not a number") == 1  # raised: not a crash


def test_a_crashing_model_is_a_one_line_runtime_error_naming_model_and_stage(monkeypatch):
    monkeypatch.setattr(contained, "PROBE", native_crash.segfault)
    with contained.stage("measuring trial 3"), pytest.raises(contained.NativeCrash) as info:
        make_session(_mlp())
    text = str(info.value)
    assert text.startswith("the model: the runtime crashed (SIGSEGV) opening and running")
    assert "while measuring trial 3" in text and "\n" not in text
    assert isinstance(info.value, EvaluationError) and info.value.exit_code == 1


def test_a_model_is_checked_once_per_structure(monkeypatch):
    calls = []
    real = contained.run_contained
    monkeypatch.setattr(contained, "run_contained", lambda *a: calls.append(1) or real(*a))
    make_session(_mlp())
    other_weights = _mlp()
    other_weights.graph.initializer[0].CopyFrom(
        numpy_helper.from_array(np.ones((64, 10), np.float32), "w")
    )
    make_session(other_weights)  # same ops and types: no second child
    assert len(calls) == 1
    make_session(_mlp("Sigmoid"))
    make_session(_mlp(), threads=2)  # other settings, other kernels
    assert len(calls) == 3


def test_a_refusal_in_the_child_is_raised_with_onnxruntimes_message_here():
    broken = _mlp()
    broken.graph.node[0].op_type = "NoSuchOp"
    with pytest.raises(EvaluationError) as info:
        make_session(broken)
    assert not isinstance(info.value, contained.NativeCrash)
    assert "NoSuchOp" in str(info.value)


def test_a_hanging_child_is_stopped(monkeypatch):
    monkeypatch.setattr(contained, "PROBE", native_crash.hang)
    monkeypatch.setattr(contained, "TIMEOUT_SECONDS", 1.0)
    with pytest.raises(contained.NativeCrash, match="neither finished nor crashed .* within 1 s"):
        make_session(_mlp())


def test_cli_crash_is_one_line_exit_1(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    onnx.save_model(_mlp(), "m.onnx")
    monkeypatch.setattr(contained, "PROBE", native_crash.segfault)
    result = CliRunner().invoke(main, ["evaluate", "m.onnx", "--no-latency"])
    assert result.exit_code == 1, result.output
    line = result.stderr.strip()
    assert line.startswith("error: m.onnx: the runtime crashed (SIGSEGV)") and "\n" not in line
    assert "while preparing" in line or "while measuring m.onnx" in line


SEARCH = """
[search.quantization.by_type.linear]
data_in_width = [8]
weight_width = [4, 8]
bias_width = [8]
weight_frac_width = ["NA"]
data_in_frac_width = ["NA"]
bias_frac_width = ["NA"]
[search.strategy]
sampler = "brute-force"
n_trials = 4
[search.metrics.accuracy]
[search.metrics.size]
"""


def test_in_a_search_a_crashing_candidate_is_a_fail_trial(
    exported_recipe, tmp_path, monkeypatch
):
    monkeypatch.setattr(contained, "PROBE", native_crash.segfault_on_4_bit_weights)
    config = tmp_path / "s.toml"
    model = exported_recipe("digits-mlp")
    config.write_text(f'[model]\nonnx = "{model}"\n[data]\ndataset = "digits"\n{SEARCH}')
    result = run_search(load_search_config(config), run_dir=tmp_path / "run", progress=False)
    by_width = {t.params["q.by_type.linear.weight_width"]: t for t in result.study.trials}
    assert by_width[4].state is TrialState.FAIL
    reason = by_width[4].user_attrs["fail_reason"]
    assert "NativeCrash" in reason and "crashed (SIGSEGV)" in reason
    assert "while measuring trial" in reason
    assert by_width[8].state is TrialState.COMPLETE and result.best


def test_one_child_serves_probes_until_a_crash_takes_it():
    first = contained.run_contained(int, "1")
    child = contained._prober().process.pid
    assert first == 0 and contained.run_contained(int, "2") == 0
    assert contained._prober().process.pid == child  # kept between probes
    assert contained.run_contained(native_crash.segfault) == -signal.SIGSEGV
    assert contained.run_contained(int, "3") == 0
    assert contained._prober().process.pid != child  # a new one after the crash


def test_the_child_opens_and_runs_a_model_without_importing_onnx(monkeypatch):
    """The child is ready once onnxruntime is imported: onnx's import (ml_dtypes, 1-3 s on
    a busy 2-core machine) made a second search worker's first trial wait that long."""
    monkeypatch.setattr(contained, "_PROBER", None)  # a new child, forked from the server
    model = _mlp().SerializeToString()
    assert contained.run_contained(contained.open_and_run, model, session_settings()) == 0
    without_onnx = "import sys\nassert 'onnx' not in sys.modules, sorted(sys.modules)"
    assert contained.run_contained(exec, without_onnx) == 0
    assert contained.run_contained(exec, "import onnx\n" + without_onnx) == 1  # it can fail


def test_warm_up_starts_the_child_that_the_first_probe_then_uses(monkeypatch):
    monkeypatch.setattr(contained, "_PROBER", None)
    monkeypatch.setattr(contained, "_WARMED", None)
    contained.warm_up()  # returns at once; a thread starts the child
    deadline = time.monotonic() + 120
    while contained._PROBER is None and time.monotonic() < deadline:
        time.sleep(0.01)
    assert contained._PROBER is not None, "no child was started in the background"
    warmed = contained._PROBER.process.pid
    contained.warm_up()  # once per process: no second child
    assert contained.run_contained(int, "1") == 0
    assert contained._prober().process.pid == warmed


def test_a_script_without_a_main_guard_runs_once(tmp_path):
    """The probe child does not run the caller's script again (multiprocessing would, and a
    script that opens a session at its top level would then fail in the child)."""
    import subprocess
    import sys

    model = tmp_path / "m.onnx"
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4])
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g", [x], [y])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)]), model)
    script = tmp_path / "user_script.py"
    script.write_text(
        "from onnxopt.runtime.ort import make_session\n"
        "print('top level ran')\n"
        f"make_session({str(model)!r})\n"
        "print('session made')\n"
    )
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                          timeout=120)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["top level ran", "session made"]
