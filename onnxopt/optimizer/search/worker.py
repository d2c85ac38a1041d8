"""One worker's trial loop (Optuna ask/tell), safe next to other workers on one study.

Each step takes the trial slot lock (:mod:`.locks`), counts the study's trials, stops at the
limit, asks for a trial, tags it with this worker and samples its point; then it releases
the lock, builds and measures the candidate and tells the result. Counting and asking under
one lock keeps the total at exactly ``n_trials`` however many workers run; sampling under it
keeps brute force from giving two workers the same point.

Failure policy: a candidate that onnxopt or the runtime cannot build or run
(:class:`~onnxopt.errors.CandidateError`) is a FAIL trial with its reason and the loop goes
on; Ctrl-C, SIGTERM or any other exception (a bug in onnxopt is one) fails the running
trial as interrupted, queues its params again for a resumed run, and re-raises: the search
stops.

On the journal storage a trial's writes (asking, tagging and sampling; evaluating and
telling) are fsync'ed once, when it is told (:func:`~.storage.write_batch`): one fsync a
trial, and every write is in the file, for the other workers, as soon as it is made.

Only public Optuna API is used: ``ask``/``tell``, the storage's trial methods, and a
brute-force sampler that leaves stopping to this loop (:mod:`.samplers`).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Sequence

import optuna
from optuna.storages import BaseStorage
from optuna.trial import FrozenTrial, TrialState

from onnxopt.errors import CandidateError, StorageUnavailableError
from onnxopt.optimizer.search.objective import Objective
from onnxopt.optimizer.search.storage import write_batch
from onnxopt.optimizer.search.study import WORKER, counted_trials, mark_interrupted, this_worker

Callback = Callable[[optuna.Study, FrozenTrial], None]


class TrialLoop:
    """Runs trials of ``study`` until ``limit`` trials count (or ``timeout`` seconds pass).

    Args:
        study: The shared study.
        storage: The storage object the study was opened on.
        objective: Suggests and evaluates a trial.
        limit: Trials the study should hold in the end (``n_trials``, or fewer when brute
            force has fewer points).
        slot_lock: Held while counting and creating a trial.
        timeout: Seconds after which no new trial starts.
        callbacks: Called with every trial this worker finished.
    """

    def __init__(
        self,
        study: optuna.Study,
        storage: BaseStorage,
        objective: Objective,
        limit: int,
        slot_lock=None,
        timeout: float | None = None,
        callbacks: Sequence[Callback] = (),
    ) -> None:
        self.study = study
        self.storage = storage
        self.objective = objective
        self.limit = limit
        self.slot_lock = slot_lock if slot_lock is not None else contextlib.nullcontext()
        self.timeout = timeout
        self.callbacks = list(callbacks)
        self.worker = this_worker()

    def run(self) -> int:
        """Run trials until the limit, the timeout or the sampler's stop.

        Returns:
            How many trials this worker finished.
        """
        deadline = None if self.timeout is None else time.monotonic() + self.timeout
        done = 0
        while deadline is None or time.monotonic() < deadline:
            started = self._start()
            if started is None:
                break
            self._finish(*started)
            done += 1
        return done

    def _start(self):
        # a trial being started need not survive a power loss (it would run again): its
        # writes are fsync'ed with the trial's results
        with self.slot_lock, write_batch(self.storage, durable=False):
            if counted_trials(self.study) >= self.limit:
                return None
            try:
                trial = self.study.ask()
                trial.set_user_attr(WORKER, self.worker)
                choice = self.objective.suggest(trial)
            except BaseException:
                self._fail_unfinished_asks()
                raise
            if counted_trials(self.study) > self.limit:
                # a database restart dropped the lock's session and another worker took the
                # last slot meanwhile: this trial is one too many, and its point waits again
                mark_interrupted(self.study, self.storage, trial.number, trial.params)
                return self._start()
        return trial, choice

    def _fail_unfinished_asks(self) -> None:
        """Ctrl-C, SIGTERM or a lost server inside ``ask``, the tagging or the sampling: fail
        the trials left RUNNING as interrupted. Under the slot lock, a trial no worker has
        tagged, or one tagged by this worker (it runs one trial at a time), can only be the one
        this worker was asking for (or a dead worker's)."""
        with contextlib.suppress(Exception):
            for t in self.study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
                if t.user_attrs.get(WORKER) in (None, self.worker):
                    # its params may be half sampled: the sampler picks the point again
                    mark_interrupted(self.study, self.storage, t.number, {})

    def _finish(self, trial: optuna.Trial, choice) -> None:
        with write_batch(self.storage):  # the trial's results and its state: one fsync
            frozen = self._evaluate_and_tell(trial, choice)
        for callback in self.callbacks:
            callback(self.study, frozen)

    def _evaluate_and_tell(self, trial: optuna.Trial, choice) -> FrozenTrial:
        try:
            values = self.objective.evaluate(trial, choice)
        except CandidateError:
            frozen = self.study.tell(trial, state=TrialState.FAIL)
        except BaseException as exc:
            # Ctrl-C, SIGTERM, a lost server, or a bug in onnxopt: the point runs again later
            try:
                mark_interrupted(self.study, self.storage, trial.number, trial.params)
            except StorageUnavailableError as lost:
                first = exc if isinstance(exc, StorageUnavailableError) else lost
                raise StorageUnavailableError(
                    f"{first}; trial {trial.number} stays RUNNING until then"
                ) from None
            raise
        else:
            frozen = self.study.tell(trial, values)
        return frozen

