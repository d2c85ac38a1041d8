"""Plain-text tables for the CLI."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from onnxopt.metrics import METRICS
from onnxopt.runtime.cpu import CPU_CLASSES


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


def _flatten(data: Mapping[str, Any], prefix: str = "") -> list[tuple[str, str]]:
    rows: list[tuple[str, str]] = []
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            rows.extend(_flatten(value, name + "."))
        elif isinstance(value, list | tuple) and value and isinstance(value[0], Mapping):
            continue  # per-tensor detail belongs in --json, not in the summary table
        else:
            rows.append((name, _fmt(value)))
    return rows


def key_value_table(data: Mapping[str, Any], title: str = "") -> str:
    """A two-column table of a (nested) mapping; nested keys are joined with dots."""
    rows = _flatten(data)
    width = max((len(k) for k, _ in rows), default=0)
    lines = [title, "-" * max(len(title), width + 20)] if title else []
    lines += [f"{k:<{width}}  {v}" for k, v in rows]
    return "\n".join(lines)


def evaluation_table(report: Any, title: str = "") -> str:
    """The people's summary of an evaluation report (``--json`` has every figure)."""
    d = report.to_dict()
    rows: dict[str, Any] = {"task": f"{d['task']} ({d['n_samples']} samples)"}
    for name, value in d["metrics"].items():
        spec = METRICS.get(name)
        label = f"{name} ({spec.description})" if spec is not None else name
        rows[label] = f"{value:.6g}"
    for batch, stats in (d.get("latency_ms") or {}).items():
        rows[f"latency batch {batch}"] = (
            f"median {stats['median_ms']:.4g} ms, p90 {stats['p90_ms']:.4g} ms "
            f"({stats['runs']} runs, {d['threads']} thread(s))"
        )
    if d.get("throughput_sps"):
        rows[f"throughput batch {d['throughput_batch_size']}"] = (
            f"{d['throughput_sps']:,.0f} samples/s ({d['threads']} thread(s))"
        )
    rows["size on disk"] = f"{d['size_bytes']:,} bytes"
    if d["parameters"] is None:
        rows["parameters"] = "(an ORT-format file holds no ONNX graph: evaluate the .onnx)"
    else:
        rows["theoretical size"] = f"{d['theoretical_size_bytes']:,.0f} bytes (sum of bits / 8)"
        rows["parameters"] = f"{d['parameters']:,}"
        rows["average bit width"] = f"{d['average_bitwidth']:.3g}"
        rows["memory density"] = f"{d['memory_density']:.3g}x (32 / average bit width)"
    rows["runtime"] = d.get("runtime", "onnxruntime")
    if d.get("integer_path"):
        rows["CPU integer path"] = _integer_path(d["integer_path"])
    return key_value_table(rows, title)


def _integer_path(path: Mapping[str, Any]) -> str:
    exact = "exact" if path["u8s8_exact"] else "saturates (8-bit weights need u8u8)"
    return f"{path['class']} ({path['cpu']}; u8s8 {exact})"


def _label_lines(labels: list[Mapping[str, Any]]) -> list[str]:
    """One note per (tensor, width, container, reason), naming its nodes."""
    grouped: dict[tuple, list[str]] = {}
    for label in labels:
        key = (label["tensor"], label["width"], label["container"], label["reason"])
        grouped.setdefault(key, []).append(label["node"])
    lines = []
    for (tensor, width, container, reason), nodes in grouped.items():
        names = ", ".join(nodes)
        if width is None:  # a kernel label: no width or container to show
            lines.append(f"  note: {names}: {reason}")
        else:
            lines.append(f"  note: {tensor} {width}-bit in {container} ({names}): {reason}")
    return lines


def _size_lines(report: Mapping[str, Any], output: Any) -> list[str]:
    sizes = report["size_bytes"]
    original = sizes["original"]
    lines = []
    for mode, size in sizes.items():
        ratio = f" ({size / original:.1%} of the original)" if mode != "original" else ""
        lines.append(f"size {mode:<11} {size:>12,} bytes{ratio}")
    theoretical = report.get("theoretical_size_bytes")
    if theoretical:
        written = next(size for mode, size in sizes.items() if mode != "original")
        lines.append(
            f"size {'theoretical':<11} {theoretical:>12,.0f} bytes (sum of bits / 8; "
            f"{output} is {written / theoretical:.2f}x that)"
        )
    return lines


def quantization_summary(report: Mapping[str, Any], output: Any) -> str:
    """What ``onnxopt quantize`` did, for people (``--json`` has the full report)."""
    lines = [f"quantized {len(report['quantized'])} node(s) -> {output}"]
    for node, kernel in report["expected_kernels"].items():
        lines.append(f"  {node}: runs as {kernel or 'float (not fused)'}")
    for node, reason in report["float_nodes"].items():
        lines.append(f"  left in float: {node}: {reason}")
    # a node the pass skipped but that float_nodes does not list (e.g. a report built by hand)
    for node, reason in report.get("skipped", {}).items():
        if node not in report["float_nodes"]:
            lines.append(f"  left in float: {node}: {reason}")
    lines += _label_lines(report["labels"])
    lines += [f"  note: {n}" for n in report["notes"]]
    fused = ", ".join(f"{k} x{v}" for k, v in report["fused_kernels"].items())
    lines.append(f"onnxruntime runs: {fused}")
    if "integer_path" in report:
        lines.append(
            f"exact for target CPU {report['target_cpu']}; this CPU: "
            f"{_integer_path(report['integer_path'])}"
        )
    return "\n".join(lines + _size_lines(report, output))


def verify_summary(report: Any, title: str) -> str:
    """``onnxopt verify``'s report: CPU, representation, match rate, max |diff|."""
    d = report.as_dict()
    path = d["integer_path"]
    rows: dict[str, Any] = {
        "CPU integer path": _integer_path(path),
        "weights stored for": d["target_cpu"] or "(no onnxopt quantization metadata)",
        "samples": d["samples"],
        "exact outputs": f"{d['exact']:,} / {d['elements']:,} ({100 * d['match_rate']:.2f}%)",
        "max |diff|": f"{d['max_abs_diff']:.6g}",
    }
    if d["first_mismatch"]:
        name, sample = d["first_mismatch"]
        rows["first mismatch"] = f"output {name!r}, sample {sample}"
    if d["inexact_float_ops"]:
        rows["float ops that may round differently"] = ", ".join(d["inexact_float_ops"])
    lines = [key_value_table(rows, title)]
    stored_for = CPU_CLASSES.get(d["target_cpu"] or "")
    if not report.is_exact and stored_for and stored_for.u8s8_exact and not path["u8s8_exact"]:
        lines.append(
            f"the weights were stored for {d['target_cpu']}; this CPU's u8s8 kernels saturate: "
            "quantize again with target_cpu = \"auto\" (or \"any\")"
        )
    return "\n".join(lines)
