"""What every trial of a search shares: data, base model, candidate builder, space, evaluator."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from onnxopt.config.search import SearchConfig
from onnxopt.data.dataset import Dataset
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
        builder = CandidateBuilder(base, dataset, s.width)
        space = SearchSpace.build(s, builder.width_space())
        space.check_points(s.strategy.enqueue)
        evaluator = Evaluator(
            dataset.val, dataset.num_classes, s.evaluation, s.constraints,
            output_name=config.model.output,
        )  # fmt: skip
        return cls(config, run_dir, dataset, builder, space, evaluator)

    def test_measurer(self) -> Measurer:
        """A measurer on the test split, with the trials' runtime (exported files only)."""
        ev = self.config.search.evaluation
        return Measurer(
            self.dataset.test, num_classes=self.dataset.num_classes,
            output_name=self.config.model.output, runtime=ev.runtime, threads=ev.threads,
        )  # fmt: skip

    def base_sha256(self) -> str:
        """SHA-256 of the serialized base model (workers check they search the same one)."""
        return model_hash(self.builder.base.SerializeToString())

    def baseline(self) -> dict:
        """fp32 base model metrics on the validation split (latency included)."""
        return self.evaluator.measure(self.builder.base).metrics
