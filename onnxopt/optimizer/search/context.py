"""What every trial of a search shares: data, base model, candidate builder, space, evaluator."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from onnxopt.config.search import Constraints, SearchConfig
from onnxopt.data.dataset import Dataset
from onnxopt.errors import MetricError
from onnxopt.optimizer.evaluate.measure import Measurer
from onnxopt.optimizer.search.base import load_base, load_data
from onnxopt.optimizer.search.candidate import CandidateBuilder, model_hash
from onnxopt.optimizer.search.checks import check_quantization_entries
from onnxopt.optimizer.search.measure import Evaluator
from onnxopt.optimizer.search.rundir import prepare_run_dir
from onnxopt.optimizer.search.space import SearchSpace


def _quiet(_: str) -> None:
    """Discards notes and progress lines (library callers that do not print)."""


@dataclass
class SearchContext:
    """Everything trials share: data, base model, candidate builder, space, evaluator."""

    config: SearchConfig
    run_dir: Path
    dataset: Dataset
    builder: CandidateBuilder
    space: SearchSpace
    evaluator: Evaluator

    @classmethod
    def prepare(
        cls,
        config: SearchConfig,
        run_dir: Path,
        notify: Callable[[str], None] = _quiet,
        *,
        expected_sha256: str | None = None,
        progress: Callable[[str], None] = _quiet,
    ) -> SearchContext:
        """Load data and base model, build the space and check the config against the model
        (every config error that does not depend on a trial surfaces here).

        Args:
            config: The search config.
            run_dir: The run directory.
            notify: Receives one line per change made to the user's model.
            expected_sha256: The stored study's base model, when there is one.
            progress: Receives a line before and after each long step.
        """
        source = config.model.onnx
        model_bytes = source.stat().st_size if source is not None and source.is_file() else 0
        run_dir = prepare_run_dir(run_dir, model_bytes)
        dataset = load_data(config)
        base, notes = load_base(config, dataset, run_dir, expected_sha256, progress)
        for note in notes:
            notify(note)
        s = config.search
        check_quantization_entries(s.quantization, base)
        builder = CandidateBuilder(base, dataset, s.width, config.model.fixed_values())
        space = SearchSpace.build(s, builder.width_space())
        space.check_points(s.strategy.enqueue)
        measurer = search_measurer(config, dataset.val, dataset.num_classes)
        evaluator = Evaluator(measurer, s.evaluation, s.constraints)
        return cls(config, run_dir, dataset, builder, space, evaluator)

    def test_measurer(self) -> Measurer:
        """A measurer on the test split with the fp32 base model's outputs there as the
        reference (exported files only)."""
        measurer = search_measurer(self.config, self.dataset.test, self.dataset.num_classes)
        return measurer.with_reference(measurer.outputs(measurer.load(self.builder.base)))

    def base_sha256(self) -> str:
        """SHA-256 of the serialized base model (workers check they search the same one)."""
        return model_hash(self.builder.base.SerializeToString())

    def reference(self):
        """The fp32 base model's scored outputs on the validation split (fidelity metrics
        compare every candidate with them)."""
        return self.evaluator.reference_outputs(self.builder.base)

    def baseline(self) -> dict:
        """fp32 base model metrics on the validation split (latency included; fidelity
        metrics against its own outputs: cosine 1, error 0)."""
        # without the search's limits: the fp32 model is the reference, not a candidate (a
        # size limit below its bytes must not skip its latency)
        e = self.evaluator
        free = Evaluator(e.measurer, e.evaluation, Constraints(), baseline={})
        try:
            return free.for_trials({}, self.reference()).measure(self.builder.base).metrics
        except MetricError as exc:  # before the study exists: nothing was written
            raise MetricError(f"on the fp32 baseline, {exc}") from None


def search_measurer(config: SearchConfig, split, num_classes: int | None) -> Measurer:
    """The measurement pipeline a search's config asks for, on one split."""
    from onnxopt.metrics import user_metrics

    s = config.search
    requested = [*s.metrics, *s.constraints.max_metric_drop]
    params = {name: {"k": m.k} for name, m in s.metrics.items() if m.k is not None}
    return Measurer(
        split, task=config.model.task, metrics=requested, user_metrics=user_metrics(s.metrics),
        num_classes=num_classes, output_name=config.model.output,
        fixed_inputs=config.model.fixed_values(), runtime=s.evaluation.runtime,
        threads=s.evaluation.threads, metric_params=params,
    )  # fmt: skip
