"""The ``onnxopt`` command line: thin click commands over the library.

Every command parses its options, calls one library function and prints a summary. Errors
from :mod:`onnxopt.errors` become one line on stderr and their exit code (2 usage, 1 runtime);
``--debug`` shows the traceback instead. click's own usage errors (a missing option, a value
outside the choices) are one ``error:`` line with exit 2 too.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import sys
from pathlib import Path

import click

from onnxopt import __version__
from onnxopt.config import bounds
from onnxopt.errors import OnnxoptError, SearchFailedError, UsageError, first_line

PathArg = click.Path(path_type=Path)


class _UsageLine(click.ClickException):
    """A click usage error shown as one line: ``error: <message> (see '<cmd> --help')``."""

    exit_code = 2

    def __init__(self, exc: click.UsageError) -> None:
        message = exc.format_message().strip().rstrip(".")
        if message[:2].istitle():  # click's "Missing option" -> our "missing option"
            message = message[0].lower() + message[1:]
        super().__init__(f"{message} (see '{_command_path(exc.ctx)} --help')")

    def show(self, file=None) -> None:
        click.echo(f"error: {self.format_message()}", err=True)


def _command_path(ctx: click.Context | None) -> str:
    """``onnxopt <command>`` however the program was started (``python -m``, CliRunner)."""
    names = []
    while ctx is not None and ctx.parent is not None:
        names.append(ctx.info_name or "")
        ctx = ctx.parent
    return " ".join(["onnxopt", *reversed(names)])


# a bare `onnxopt` prints the help through this error: keep click's own display for it
_NO_ARGS_IS_HELP = getattr(click.exceptions, "NoArgsIsHelpError", ())


def _one_line(exc: click.UsageError) -> click.ClickException:
    return exc if isinstance(exc, _NO_ARGS_IS_HELP) else _UsageLine(exc)


class _Group(click.Group):
    """Turns onnxopt errors and click usage errors into one line and an exit code, unless
    --debug is given (onnxopt errors then show their traceback)."""

    def make_context(self, info_name, args, parent=None, **extra) -> click.Context:
        try:
            return super().make_context(info_name, args, parent=parent, **extra)
        except click.UsageError as exc:  # options of the group itself
            raise _one_line(exc) from exc

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except click.UsageError as exc:  # unknown command, a command's options
            raise _one_line(exc) from exc
        except OnnxoptError as exc:
            if ctx.obj and ctx.obj.get("debug"):
                raise
            click.echo(f"error: {exc}", err=True)
            sys.exit(exc.exit_code)
        except (click.ClickException, click.exceptions.Exit, click.exceptions.Abort):
            raise
        except Exception as exc:  # a bug in onnxopt (or a library): one line, exit 1
            if ctx.obj and ctx.obj.get("debug"):
                raise
            click.echo(
                f"error: internal error ({type(exc).__name__}: {first_line(exc)}); this is a "
                "bug in onnxopt: run again with --debug for the traceback and report it",
                err=True,
            )
            sys.exit(1)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="onnxopt")
@click.option("--debug", is_flag=True, help="Show full tracebacks on errors.")
@click.pass_context
def main(ctx: click.Context, debug: bool) -> None:
    """Export, quantize, scale, measure and search ONNX models for edge runtimes."""
    ctx.ensure_object(dict)
    ctx.obj["debug"] = debug


@main.command("recipes")
def recipes_cmd() -> None:
    """List the reference model recipes."""
    from onnxopt.models.recipes import RECIPES

    for recipe in RECIPES.values():
        click.echo(f"{recipe.name:<26} {recipe.description}")


def _data_options(f, data_default: str | None = "digits", data_help: str | None = None):
    f = click.option(
        "--label-column",
        default="label",
        show_default=True,
        help="Label column of a generic CSV file.",
    )(f)
    f = click.option(
        "--data-format",
        default=None,
        type=click.Choice(["digits", "npz", "csv", "jsc-openml", "jsc-h5"]),
        help="Format of --data (inferred from the extension by default).",
    )(f)
    return click.option(
        "--data",
        "data_spec",
        default=data_default,
        show_default=data_default is not None,
        help=data_help or "'digits' (bundled) or a .npz/.csv/.parquet/.h5 file.",
    )(f)


def _train_data_options(f):
    return _data_options(
        f,
        data_default=None,
        data_help="'digits' (bundled) or a .npz/.csv/.parquet/.h5 file [default: the recipe's "
        "dataset when it is bundled; JSC recipes need a JSC file].",
    )


def _rewrite_output_options(output_help: str):
    def decorate(f):
        f = click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")(f)
        return click.option("-o", "--output", type=PathArg, required=True, help=output_help)(f)

    return decorate


_split_option = click.option(
    "--split",
    default="test",
    show_default=True,
    type=click.Choice(["train", "val", "test", "calibration"]),
)
_threads_option = click.option(
    "--threads",
    type=click.IntRange(1, bounds.MAX_THREADS),
    default=1,
    show_default=True,
    help="intra-op threads.",
)


def _input_values(ctx, param, values) -> dict:
    """``NAME=1.5`` or ``NAME=1,2,3``: the same value for every sample of that input."""
    out = {}
    for item in values:
        name, sep, text = item.partition("=")
        if not sep or not name:
            raise click.BadParameter(f"{item!r} must look like NAME=VALUE or NAME=1,2,3")
        try:
            numbers = [_number(t) for t in text.split(",")]
        except ValueError:
            raise click.BadParameter(f"{item!r}: the value must be numbers") from None
        out[name] = numbers[0] if len(numbers) == 1 else numbers
    return out


def _number(text: str) -> int | float:
    return float(text) if "." in text or "e" in text.lower() else int(text)


_input_value_option = click.option(
    "--input-value",
    "input_values",
    multiple=True,
    callback=_input_values,
    help="NAME=VALUE (or NAME=1,2,3): feed model input NAME this value for every sample, "
    "for inputs the data do not give (repeatable).",
)


def _input_shapes(values) -> dict[str, tuple[int | None, ...]]:
    """``NAME=1,3,48,192`` entries: static shapes by input name (the batch included; ``?``
    leaves a dimension as the model has it)."""
    out: dict[str, tuple[int | None, ...]] = {}
    for item in values:
        name, sep, dims = item.partition("=")
        if not sep or not name:
            raise UsageError(f"--input-shape {item!r} must look like NAME=1,3,48,192")
        parts = dims.split(",")
        given = _parse_shape(",".join(p for p in parts if p.strip() != "?") or "1",
                             option=f"--input-shape {name}")  # fmt: skip
        sizes = iter(given)
        out[name] = tuple(None if p.strip() == "?" else next(sizes) for p in parts)
    return out


def _preparation_options(f):
    """``--input-shape NAME=dims`` and ``--batch-size-fixed``: how the model is prepared
    (:class:`onnxopt.exporters.user_model.Preparation`), passed as ``preparation``."""

    @functools.wraps(f)
    def wrapper(*args, input_shapes, batch_size_fixed, **kwargs):
        from onnxopt.exporters.user_model import Preparation

        shapes = _input_shapes(input_shapes)
        return f(*args, preparation=Preparation(input_shapes=shapes,
                                                keep_batch=batch_size_fixed), **kwargs)  # fmt: skip

    wrapper = click.option(
        "--batch-size-fixed",
        is_flag=True,
        help="Keep a batch axis the file fixes (by default it is freed and checked).",
    )(wrapper)
    return click.option(
        "--input-shape",
        "input_shapes",
        multiple=True,
        help="NAME=1,3,48,192: fix the symbolic dimensions of input NAME (every dimension, "
        "the batch included, ? keeps one as it is: NAME=?,3,48,192; repeatable).",
    )(wrapper)


def _task_options(f):
    """``--task``, ``--metric`` and ``--reference`` (the metric registry's names)."""
    from onnxopt.metrics import TASKS

    f = click.option(
        "--reference",
        type=PathArg,
        help="A reference model (the fp32 original) for fidelity metrics (cosine_to_reference...).",
    )(f)
    f = click.option(
        "--metric",
        "metric_specs",
        multiple=True,
        help="A metric to measure besides the task's (repeatable); NAME=file.py:fn or "
        "NAME=pkg.mod:fn adds your own: fn(outputs, targets) -> float.",
    )(f)
    return click.option(
        "--task",
        type=click.Choice(list(TASKS)),
        default="classification",
        show_default=True,
        help="What the model does: which metrics are measured and how the output is read.",
    )(f)


def _runtime_option(f):
    """``--runtime``: a registered backend; one without its package says how to install it."""
    from onnxopt.runtime import BACKENDS, DEFAULT_RUNTIME

    return click.option(
        "--runtime",
        type=click.Choice(list(BACKENDS)),
        default=DEFAULT_RUNTIME,
        show_default=True,
        help="The runtime that runs the model.",
    )(f)


def _print_notes(notes) -> None:
    """What onnxopt changed in a user's model to work with it: one ``note:`` line each."""
    for note in notes:
        click.echo(f"note: {note}", err=True)


def _load_data(data_spec: str, data_format: str | None, label_column: str):
    from onnxopt.data import load_dataset

    return load_dataset(data_spec, data_format=data_format, label_column=label_column)


@main.command("train")
@click.argument("recipe")
@_train_data_options
@click.option(
    "--epochs",
    type=click.IntRange(1, bounds.MAX_EPOCHS),
    default=None,
    help="Epochs (the recipe's default if unset).",
)
@click.option(
    "--batch-size", type=click.IntRange(1, bounds.MAX_BATCH_SIZE), default=64, show_default=True
)
@click.option(
    "--lr",
    "learning_rate",
    type=click.FloatRange(0, bounds.MAX_LEARNING_RATE, min_open=True),
    default=None,
    help="Adam learning rate.",
)
@click.option("--seed", type=click.IntRange(0, bounds.MAX_SEED), default=0, show_default=True)
@click.option("-o", "--output", type=PathArg, required=True, help="Weights file to write (.pt).")
def train_cmd(
    recipe, data_spec, data_format, label_column, epochs, batch_size, learning_rate, seed, output
) -> None:
    """Train RECIPE on a dataset and save its weights (state dict)."""
    from onnxopt.models.recipes import default_data, get_recipe
    from onnxopt.models.training import save_weights, train

    # unknown names, and JSC recipes without a JSC file, fail before any data is read
    data_spec = data_spec or default_data(get_recipe(recipe))
    dataset = _load_data(data_spec, data_format, label_column)
    trained = train(
        recipe,
        dataset,
        epochs=epochs,
        batch_size=batch_size,
        learning_rate=learning_rate,
        seed=seed,
    )
    save_weights(trained, output)
    click.echo(
        f"trained {recipe} on {dataset.name}: best validation {trained.val_metric} "
        f"{trained.val_score:.4f} after {trained.epochs} epochs (seed {seed}) -> {output}"
    )


def _parse_shape(text: str | None, option: str = "--input-shape") -> tuple[int, ...]:
    if not text:
        raise UsageError("--factory needs --input-shape (per sample, e.g. 64 or 1,8,8)")
    try:
        shape = tuple(int(t) for t in text.split(","))
    except ValueError:
        raise UsageError(f"{option} {text!r} must be integers separated by commas") from None
    if any(d <= 0 or d > bounds.MAX_INPUT_ELEMENTS for d in shape):
        limit = f"{bounds.MAX_INPUT_ELEMENTS:,}"
        raise UsageError(f"{option} {text!r} must be positive integers (at most {limit})")
    return shape


def _fpga_export_options(f):
    """--format and the hls4ml options of ``export`` (hls4ml and qonnx: the fpga extra)."""
    from onnxopt.config.fpga import DEFAULT_PART

    hls = [
        click.option("--clock-period", type=float, default=5.0, show_default=True,
                     help="hls4ml: clock period in ns."),
        click.option("--backend", type=click.Choice(["vitis", "vivado"]), default="vitis",
                     show_default=True, help="hls4ml backend."),
        click.option("--part", default=DEFAULT_PART, show_default=True, help="hls4ml: FPGA part."),
        click.option("--io-type", type=click.Choice(["io_parallel", "io_stream"]),
                     default="io_parallel", show_default=True, help="hls4ml I/O type."),
        click.option("--strategy", type=click.Choice(["latency", "resource"]), default="latency",
                     show_default=True, help="hls4ml strategy."),
        click.option("--reuse-factor", type=click.IntRange(1, 4096), default=1,
                     show_default=True, help="hls4ml: multiplications per multiplier."),
    ]  # fmt: skip

    def collect(func):
        def wrapper(*args, reuse_factor, strategy, io_type, part, backend, clock_period, **kw):
            options = dict(reuse_factor=reuse_factor, strategy=strategy, io_type=io_type,
                           part=part, backend=backend, clock_period=clock_period)  # fmt: skip
            return func(*args, hls4ml_options=options, **kw)

        return functools.update_wrapper(wrapper, func)

    f = collect(f)
    for option in hls:
        f = option(f)
    f = click.option("--verify", is_flag=True,
                     help="hls4ml: compile the C++ emulation (g++) and compare it with "
                     "onnxruntime on the data, exactly.")(f)  # fmt: skip
    f = _data_options(f, data_default=None, data_help="Data to check on (its test split): "
                      "'digits' or a file [default: 1,000 synthetic inputs].")  # fmt: skip
    return click.option(
        "--format", "fmt", type=click.Choice(["onnx", "qonnx", "hls4ml"]), default="onnx",
        show_default=True, help="onnx; qonnx: a QONNX file; hls4ml: an hls4ml project folder.",
    )(f)  # fmt: skip


def _fpga_export(model, fmt, output, data_spec, data_format, label_column, verify, options):
    from onnxopt.config.fpga import Hls4mlOptions
    from onnxopt.fpga.export import export_hls4ml, export_qonnx, synthetic_inputs
    from onnxopt.model_io import load_onnx

    proto = load_onnx(model)
    if data_spec:
        x, source = _load_data(data_spec, data_format, label_column).test.x, "test split"
    else:
        x, source = synthetic_inputs(proto), "synthetic inputs"
    if fmt == "qonnx":
        res = export_qonnx(proto, output, x)
        click.echo(f"QONNX: {res.quant_nodes} Quant node(s), onnx.checker passed; "
                   f"{res.check.summary()} ({source}) -> {output}")  # fmt: skip
        return
    res = export_hls4ml(proto, output, Hls4mlOptions(**options, verify=verify), x)
    click.echo(f"hls4ml project: {res.layers} layer(s), input {res.input_type}, "
               f"{res.weight_bits:,} weight bits, converted in {res.convert_seconds:.1f} s "
               f"-> {output} (types in {res.precision_path.name})")  # fmt: skip
    if res.verify is not None:
        click.echo(f"compiled in {res.compile_seconds:.1f} s; {res.verify.summary()} ({source})")
    click.echo("synthesis not run: it needs Vitis HLS / Vivado, which are not installed here")


@main.command("export")
@click.argument("model", type=PathArg, required=False)
@click.option(
    "--recipe", help="Recipe the weights belong to (read from the weights file if unset)."
)
@click.option(
    "--weights", type=PathArg, help="Weights file from 'onnxopt train' (or a state dict)."
)
@click.option("--factory", help="'module:function' returning a torch nn.Module.")
@click.option(
    "--input-shape",
    "input_shapes",
    multiple=True,
    help="Per-sample input shape for --factory (64 or 1,8,8); for an ONNX MODEL, "
    "NAME=1,3,48,192 fixes input NAME's symbolic dimensions (repeatable).",
)
@click.option(
    "--batch-size-fixed",
    is_flag=True,
    help="ONNX MODEL: keep a batch axis the file fixes (by default it is freed and checked).",
)
@click.option(
    "--opset",
    type=int,
    default=21,
    show_default=True,
    help="Opset written (18..28); an ONNX MODEL at another opset is converted up or down "
    "and its outputs checked.",
)
@click.option(
    "-o", "--output", type=PathArg, required=True,
    help="ONNX file to write (a folder for --format hls4ml).",
)  # fmt: skip
@_fpga_export_options
@click.pass_context
def export_cmd(
    ctx, model, recipe, weights, factory, input_shapes, batch_size_fixed, opset, output, fmt,
    data_spec, data_format, label_column, verify, hls4ml_options,
) -> None:  # fmt: skip
    """Export a torch model to ONNX (checked against torch), or prepare an ONNX MODEL file;
    with --format qonnx / hls4ml, turn a quantized MODEL into a QONNX file / hls4ml project."""
    if fmt != "onnx":
        if model is None:
            raise UsageError(f"--format {fmt} needs a quantized ONNX MODEL (onnxopt quantize)")
        return _fpga_export(model, fmt, output, data_spec, data_format, label_column,
                            verify, hls4ml_options)  # fmt: skip
    if model is not None:
        from onnxopt.exporters.onnx_input import prepare_onnx_file
        from onnxopt.exporters.user_model import Preparation

        preparation = Preparation(
            input_shapes=_input_shapes(input_shapes), keep_batch=batch_size_fixed
        )
        prepared = prepare_onnx_file(model, output, opset=opset, preparation=preparation)
        _print_notes(prepared.notes)
        click.echo(
            f"prepared {model}: opset {prepared.opset_before} -> {prepared.opset}, "
            f"{prepared.batchnorms_folded} BatchNorm folded, {prepared.batchnorms_left} left, "
            f"max |diff| {prepared.max_abs_diff:.2e} -> {output}"
        )
        return
    from onnxopt.exporters.torch_onnx import ATOL, RTOL, export_module

    if factory:
        from onnxopt.models.factory import load_factory

        if len(input_shapes) > 1 or any("=" in t for t in input_shapes):
            raise UsageError("--factory takes one per-sample --input-shape, e.g. 64 or 1,8,8")
        shape = _parse_shape(input_shapes[0] if input_shapes else None)
        module = load_factory(factory, weights)
    elif weights:
        from onnxopt.models.training import load_weights

        trained = load_weights(weights, recipe)
        module, shape = trained.module, trained.input_shape
    else:
        raise UsageError("give an ONNX MODEL, --weights from 'onnxopt train', or --factory")
    debug = bool(ctx.obj and ctx.obj.get("debug"))
    res = export_module(module, shape, output, opset=opset, debug=debug)
    why = f" (dynamo failed: {res.fallback_reason})" if res.fallback_reason else ""
    click.echo(
        f"exported with the {res.exporter} exporter{why} at opset {res.opset}; "
        f"{res.batchnorms_folded} BatchNorm folded, {res.batchnorms_left} left; "
        f"batch sizes {list(res.batch_sizes_checked)} match torch within rtol={RTOL}, "
        f"atol={ATOL} (max |diff| {res.max_abs_diff:.2e}) -> {output}"
    )


def _ort_model_path(_ctx, _param, value: Path) -> Path:
    """onnxruntime opens a model by its UTF-8 name: other names are refused before any work."""
    from onnxopt.model_io import require_utf8_name

    return require_utf8_name(value)


@main.command("evaluate")
@click.argument("model", type=PathArg, callback=_ort_model_path)
@_data_options
@_split_option
@_threads_option
@click.option(
    "--batch-size",
    "batch_sizes",
    type=click.IntRange(1, bounds.MAX_BATCH_SIZE),
    multiple=True,
    default=(1, 256),
    show_default=True,
    help="Latency batch sizes (repeatable).",
)
@click.option("--no-latency", is_flag=True, help="Skip latency measurement.")
@click.option("--output-name", help="The scored output, when the model has several.")
@_task_options
@_input_value_option
@_preparation_options
@_runtime_option
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def evaluate_cmd(
    model,
    preparation,
    data_spec,
    data_format,
    label_column,
    split,
    threads,
    batch_sizes,
    no_latency,
    output_name,
    task,
    metric_specs,
    reference,
    input_values,
    runtime,
    as_json,
) -> None:
    """Measure MODEL (.onnx or .ort): task metrics, latency, size, bit width."""
    from onnxopt.metrics import user_metric
    from onnxopt.optimizer.evaluate import evaluate_model
    from onnxopt.plugins import load_callable
    from onnxopt.report.tables import evaluation_table

    names, user = [], {}
    for spec in metric_specs:
        name, _, function = spec.partition("=")
        names.append(name)
        if function:
            fn = load_callable(function, what=f"metric {name!r}")
            user[name] = user_metric(name, fn, "maximize")
    dataset = _load_data(data_spec, data_format, label_column)
    report = evaluate_model(
        model,
        dataset.split(split),
        threads=threads,
        batch_sizes=tuple(batch_sizes),
        measure_latency=not no_latency,
        num_classes=dataset.num_classes,
        output_name=output_name,
        runtime=runtime,
        task=task,
        metrics=names,
        user_metrics=user,
        reference=reference,
        fixed_inputs=input_values,
        preparation=preparation,
    )
    _print_notes(report.notes)
    if as_json:
        click.echo(
            json.dumps(
                {"model": str(model), "data": dataset.name, "split": split, **report.to_dict()},
                indent=2,
            )
        )
    else:
        click.echo(evaluation_table(report, title=f"{model} on {dataset.name}/{split}"))


@main.command("verify")
@click.argument("model", type=PathArg)
@_data_options
@_split_option
@_threads_option
@_input_value_option
@_runtime_option
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of text.")
def verify_cmd(
    model, data_spec, data_format, label_column, split, threads, input_values, runtime, as_json
) -> None:
    """Check that the runtime computes MODEL exactly on this CPU (fixed-point reference).

    Exit 1 when any output value differs from the reference.
    """
    from onnxopt.optimizer.evaluate.verify import verify_model
    from onnxopt.report.tables import verify_summary

    dataset = _load_data(data_spec, data_format, label_column)
    report = verify_model(
        model, dataset.split(split).x, threads=threads, runtime=runtime,
        fixed_inputs=input_values,
    )  # fmt: skip
    if as_json:
        click.echo(json.dumps({"model": str(model), "data": dataset.name, "split": split,
                               **report.as_dict()}, indent=2))  # fmt: skip
    else:
        click.echo(verify_summary(report, f"{model} on {dataset.name}/{split}"))
    if not report.is_exact:
        sys.exit(1)


@main.command("quantize")
@click.argument("model", type=PathArg)
@click.option(
    "--config",
    "config_path",
    type=PathArg,
    default=None,
    help="Quantization TOML (default: 8-bit weights and activations, auto fractions).",
)
@_data_options
@_input_value_option
@_preparation_options
@_rewrite_output_options("Quantized ONNX file to write.")
def quantize_cmd(
    model, preparation, config_path, data_spec, data_format, label_column, input_values, output,
    as_json,
) -> None:  # fmt: skip
    """Quantize MODEL to fixed point with QDQ nodes that onnxruntime runs fused."""
    from onnxopt.config import load_toml
    from onnxopt.config.quantization import QuantizationConfig
    from onnxopt.optimizer.quantization.quantize_file import quantize_file
    from onnxopt.report.tables import quantization_summary

    config = load_toml(config_path, QuantizationConfig) if config_path else QuantizationConfig()
    dataset = _load_data(data_spec, data_format, label_column)
    done = quantize_file(
        model, output, config, dataset.calibration.x, input_values, preparation=preparation
    )
    _print_notes(done.notes)
    report = done.report()
    click.echo(json.dumps(report, indent=2) if as_json else quantization_summary(report, output))


@main.command("sensitivity")
@click.argument("model", type=PathArg)
@_data_options
@click.option("--split", default="val", show_default=True,
              type=click.Choice(["train", "val", "test", "calibration"]),
              help="The split each layer is scored on.")  # fmt: skip
@click.option(
    "--width", "widths", type=click.IntRange(2, 16), multiple=True, default=(2, 4, 8),
    show_default=True, help="Weight widths to try per layer (repeatable).",
)  # fmt: skip
@click.option("--data-in-width", type=click.IntRange(2, 16), default=8, show_default=True,
              help="Width of the quantized layer's inputs.")  # fmt: skip
@click.option("--task", type=click.Choice(["classification", "regression", "embedding"]),
              default="classification", show_default=True)  # fmt: skip
@click.option("--metric", help="The metric compared (default: the task's first).")
@_threads_option
@_input_value_option
@click.option("--output", type=PathArg, help="JSON to write (default MODEL.sensitivity.json).")
@click.option("--json", "as_json", is_flag=True, help="Print the JSON instead of a table.")
def sensitivity_cmd(
    model, data_spec, data_format, label_column, split, widths, data_in_width, task, metric,
    threads, input_values, output, as_json,
):  # fmt: skip
    """Rank MODEL's layers by the metric drop when only that layer is quantized."""
    from onnxopt.atomic import write_text
    from onnxopt.exporters.user_model import DEFAULTS, load_user_model
    from onnxopt.metrics import TASKS, direction
    from onnxopt.optimizer.evaluate.measure import Measurer
    from onnxopt.optimizer.evaluate.sensitivity import layer_sensitivity, sensitivity_table
    from onnxopt.optimizer.quantization.qdq_pass import DEFAULT_OPSET

    name = metric or TASKS[task].defaults[0]
    dataset = _load_data(data_spec, data_format, label_column)
    prepared = load_user_model(model, dataclasses.replace(DEFAULTS, opset=DEFAULT_OPSET))
    _print_notes(prepared.notes)
    measurer = Measurer(dataset.split(split), task=task, metrics=[name], threads=threads,
                        num_classes=dataset.num_classes, fixed_inputs=input_values)  # fmt: skip
    report = layer_sensitivity(
        prepared.model, measurer, dataset.calibration.x, metric=name, direction=direction(name),
        widths=tuple(sorted(set(widths))), data_in_width=data_in_width,
        fixed_inputs=input_values,
        progress=(lambda _: None) if as_json else (lambda line: click.echo(line, err=True)),
    )  # fmt: skip
    data = {"model": str(model), "data": dataset.name, "split": split, **report.as_dict()}
    target = output or model.with_suffix(".sensitivity.json")
    write_text(target, json.dumps(data, indent=2) + "\n")
    if as_json:
        click.echo(json.dumps(data, indent=2))
    else:
        click.echo(sensitivity_table(report))
        click.echo(f"-> {target}")


@main.command("scale")
@click.argument("model", type=PathArg)
@click.option(
    "--config",
    "config_path",
    type=PathArg,
    required=True,
    help="Width TOML: [layers.<node>] channel_multiplier and mode.",
)
@_data_options
@_preparation_options
@_input_value_option
@_rewrite_output_options("Scaled ONNX file to write.")
def scale_cmd(
    model, preparation, config_path, data_spec, data_format, label_column, input_values, output,
    as_json,
) -> None:
    """Scale the channel widths of MODEL's Gemm/MatMul/Conv layers consistently."""
    from onnxopt.config import load_toml
    from onnxopt.exporters.user_model import load_user_model
    from onnxopt.model_io import save_onnx
    from onnxopt.optimizer.width import WidthConfig, refit_inputs, scale_width

    config = load_toml(config_path, WidthConfig)
    prepared = load_user_model(model, preparation)
    _print_notes(prepared.notes)
    base = prepared.model
    calibration = None
    if config.needs_calibration():
        calibration = refit_inputs(_load_data(data_spec, data_format, label_column))
    result = scale_width(
        base, config, calibration, source=str(config_path), fixed_inputs=input_values
    )
    save_onnx(result.model, output)
    if as_json:
        click.echo(json.dumps(result.as_dict(), indent=2))
    else:
        click.echo(result.summary())
        click.echo(f"-> {output} ({output.stat().st_size:,} bytes)")


@contextlib.contextmanager
def _sigterm_interrupts():
    """SIGTERM (``kill``, ``docker stop``) acts as Ctrl-C while a search runs: the running
    trial is failed as interrupted and its point queued again, instead of being left RUNNING."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(*_):
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@main.command("search")
@click.argument("config_path", type=PathArg)
@click.option("--run-dir", type=PathArg, help="Output folder (default runs/<config stem>).")
@click.option(
    "--storage",
    help="Optuna storage: an RDB URL (sqlite:///x.db, postgresql://...) or a journal file "
    "(default: study.journal in the run dir).",
)
@click.option("--study", "study_name", help="Study name; joins the study when it exists.")
@click.option("--workers", type=click.IntRange(1, 64), help="Override strategy.workers.")
@click.option("--resume", is_flag=True, help="Continue the stored study.")
@click.option(
    "--reclaim",
    is_flag=True,
    help="Also re-run trials left RUNNING by workers on other hosts (none may still run).",
)
@click.option(
    "--restart",
    is_flag=True,
    help="Move the run directory's previous search (study, base model, outputs) into "
    "previous-<time>/ and start anew.",
)
@click.option("--n-trials", type=click.IntRange(min=1), help="Override strategy.n_trials.")
@click.option("--no-export", is_flag=True, help="Skip exporting the best models and plots.")
@click.option("--no-progress", is_flag=True, help="Hide the progress bar.")
@click.option("--json", "as_json", is_flag=True, help="Print report.json instead of a table.")
def search_cmd(
    config_path, run_dir, storage, study_name, workers, resume, reclaim, restart, n_trials,
    no_export, no_progress, as_json,
):  # fmt: skip
    """Search quantization and width choices of a model with Optuna (CONFIG_PATH: TOML)."""
    from onnxopt.optimizer.search.parallel import configured_workers, standby

    # the other workers' interpreters import while this one loads the config and the model
    with standby((workers or configured_workers(config_path)) - 1):
        _search(
            config_path, run_dir, storage, study_name, workers, resume, reclaim, restart,
            n_trials, no_export, no_progress, as_json,
        )  # fmt: skip


def _search(
    config_path, run_dir, storage, study_name, workers, resume, reclaim, restart, n_trials,
    no_export, no_progress, as_json,
):  # fmt: skip
    from onnxopt.config.search import load_search_config
    from onnxopt.optimizer.search.reference_points import reference_points
    from onnxopt.optimizer.search.run import (
        export_best,
        exports_on_disk,
        remeasure_best,
        run_search,
        write_remeasured,
    )
    from onnxopt.report.html_report import write_html_report
    from onnxopt.report.search_report import report_dict, summary, write_reports
    from onnxopt.report.ship import all_failed, shipping_summary, trial_counts

    config = load_search_config(config_path, n_trials=n_trials, workers=workers)
    run_dir = run_dir or Path("runs") / config_path.stem

    def say(line: str) -> None:
        if not as_json:
            click.echo(line, err=True)

    with _sigterm_interrupts():
        result = run_search(
            config, run_dir=run_dir, storage=storage, study_name=study_name, resume=resume,
            reclaim=reclaim, restart=restart, progress=not no_progress,
            notify=lambda note: _print_notes([note]), say=say,
        )  # fmt: skip
        failed = all_failed(trial_counts(result.study.get_trials(deepcopy=False)))
        if failed:
            write_reports(result)  # trials.csv keeps every reason
            raise SearchFailedError(f"{failed}; see {run_dir / 'trials.csv'}")
        if no_export:
            exports_on_disk(result)
        else:
            remeasure_best(result, say=say)
            export_best(result, say=say)
            write_html_report(result, reference_points(result, say=say))
    write_reports(result)
    write_remeasured(result)
    if as_json:
        click.echo(json.dumps(report_dict(result), indent=2))
    else:
        click.echo(summary(result))
        click.echo(shipping_summary(result, study_name))
        click.echo(f"-> {run_dir}")


@main.command("search-worker", hidden=True)
@click.argument("run_dir", type=PathArg)
@click.option("--storage", required=True)
@click.option("--study", "study_name", required=True)
@click.option("--index", type=int, default=1)
def search_worker_cmd(run_dir, storage, study_name, index) -> None:
    """One extra worker of `search --workers` (started by it)."""
    from onnxopt.optimizer.search.run import run_worker

    with _sigterm_interrupts():
        done = run_worker(run_dir, storage, study_name, index)
    click.echo(f"worker {index}: {done} trials")


@main.command("select")
@click.argument("source")
@click.option("--rule", help="e.g. 'min size where accuracy_drop <= 0.01'.")
@click.option("--minimize", help="Metric to minimize (instead of --rule).")
@click.option("--maximize", help="Metric to maximize (instead of --rule).")
@click.option("--max-accuracy-drop", type=float, help="Condition accuracy_drop <= VALUE.")
@click.option("--run-dir", type=PathArg, help="Run directory when SOURCE is a storage URL.")
@click.option("--study", "study_name", help="Study name (default: onnxopt-search).")
@click.option("-o", "--output-dir", type=PathArg, help="Folder for the selected model.")
@click.option(
    "--format", "formats", multiple=True, type=click.Choice(["onnx", "ort", "qonnx", "hls4ml"]),
    help="Export formats (repeatable; default: the config's [search.export] formats).",
)  # fmt: skip
@click.option("--verify", is_flag=True, help="hls4ml: compile and compare with onnxruntime.")
def select_cmd(
    source, rule, minimize, maximize, max_accuracy_drop, run_dir, study_name, output_dir,
    formats, verify,
):  # fmt: skip
    """Pick one finished trial of a search (SOURCE: run dir or storage URL) and export it."""
    from onnxopt.optimizer.search.select import parse_rule, select_and_export

    if rule is None:
        if bool(minimize) == bool(maximize):
            raise UsageError("give --rule, or exactly one of --minimize and --maximize")
        rule = f"min {minimize}" if minimize else f"max {maximize}"
        if max_accuracy_drop is not None:
            rule += f" where accuracy_drop <= {max_accuracy_drop}"
    trial, exported = select_and_export(
        source, parse_rule(rule), run_dir, output_dir, study_name=study_name,
        formats=tuple(formats) or None, verify=verify or None,
    )  # fmt: skip
    click.echo(
        f"trial {trial.number} ({rule}): test {exported.test_headline or 'figures'}, "
        f"{exported.size_bytes:,} bytes -> {exported.onnx_path}"
    )
    for fmt, info in (exported.fpga or {}).items():
        check = info.get("check") or info.get("verify")
        exact = f"; {check['exact']}/{check['total']} outputs exact" if check else ""
        click.echo(f"{fmt}: {info['path']}{exact}")


@main.command("status")
@click.argument("source")
@click.option("--study", "study_name", help="Study name (default: onnxopt-search).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of text.")
def status_cmd(source, study_name, as_json) -> None:
    """Show a search's progress, workers, baseline and best trials.

    SOURCE: a run directory, journal file or storage URL. Works while workers run.
    """
    from onnxopt.report.status import study_status

    status = study_status(source, study_name)
    click.echo(json.dumps(status.as_dict(), indent=2) if as_json else status.render())


@main.command("dashboard")
@click.argument("source")
@click.option("--study", "study_name", help="Study to link to (default: onnxopt-search).")
@click.option(
    "--host", default="127.0.0.1", show_default=True,
    help="Address to listen on; anything but loopback lets other machines read and delete "
    "the studies.",
)  # fmt: skip
@click.option("--port", type=click.IntRange(1, 65535), default=8080, show_default=True)
def dashboard_cmd(source, study_name, host, port) -> None:
    """Serve optuna-dashboard on a search's storage (SOURCE: run dir, journal file or URL)."""
    from onnxopt.report.dashboard import serve_dashboard

    serve_dashboard(source, study_name, host=host, port=port, echo=click.echo)


if __name__ == "__main__":  # pragma: no cover
    main()
