"""On a database, one trial's parameter and attribute writes go in a few transactions.

The search loop's trial steps run in :func:`~onnxopt.optimizer.search.storage.write_batch`;
on SQLite and PostgreSQL the writes queued there are committed together when the next
other call comes or the block ends. Counted here: transactions that wrote something
(``INSERT``/``UPDATE``/``DELETE`` before a ``COMMIT``), on the storage's own engine.
"""

from __future__ import annotations

import uuid

import optuna
import pytest
from sqlalchemy import event

from onnxopt.optimizer.search.storage import open_storage, write_batch
from onnxopt.optimizer.search.worker import TrialLoop
from tests.optimizer.search.test_postgres import postgres_url  # noqa: F401  (a fixture)

PARAMS = ("a", "b", "c", "d")
ATTRS = ("config", "metrics", "constraints", "model_sha256", "feasible")


class WriteTransactions:
    """Counts the committed transactions of an engine that wrote rows."""

    def __init__(self, engine) -> None:
        self.count = 0
        self._wrote = False
        event.listen(engine, "before_cursor_execute", self._statement)
        event.listen(engine, "commit", self._commit)

    def _statement(self, conn, cursor, statement, *args) -> None:
        if statement.lstrip().split(None, 1)[0].upper() in ("INSERT", "UPDATE", "DELETE"):
            self._wrote = True

    def _commit(self, conn) -> None:
        self.count += self._wrote
        self._wrote = False


class Objective:
    """Four parameters and five result attributes a trial, like a search's trials."""

    def suggest(self, trial):
        return {k: trial.suggest_int(k, 0, 9) for k in PARAMS}

    def evaluate(self, trial, choice):
        for key in ATTRS:
            trial.set_user_attr(key, {"sum": sum(choice.values()), "key": key})
        return [float(sum(choice.values()))]


def _run(url: str, name: str, trials: int):
    storage = open_storage(url)
    study = optuna.create_study(
        storage=storage, study_name=name, sampler=optuna.samplers.RandomSampler(seed=3)
    )
    counter = WriteTransactions(storage.engine)
    assert TrialLoop(study, storage, Objective(), limit=trials).run() == trials
    return study, counter.count


def _check(study, trials: int) -> None:
    done = study.get_trials()
    assert [t.state.name for t in done] == ["COMPLETE"] * trials
    for t in done:
        assert set(t.params) == set(PARAMS)
        total = sum(t.params.values())
        assert t.value == total
        assert all(t.user_attrs[k] == {"sum": total, "key": k} for k in ATTRS)
        assert "worker" in t.user_attrs


def test_a_search_loop_on_sqlite_writes_four_transactions_a_trial(tmp_path):
    study, writes = _run(f"sqlite:///{tmp_path / 'study.db'}", "s", trials=6)
    _check(study, 6)
    # ask (Optuna's create), tag + parameters, results, tell: 4 a trial (was 12: one per
    # parameter and attribute)
    assert writes == 4 * 6
    # another process reading the file sees the same trials
    reader = open_storage(f"sqlite:///{tmp_path / 'study.db'}", read_only=True)
    again = optuna.load_study(study_name="s", storage=reader)
    assert [t.params for t in again.get_trials()] == [t.params for t in study.get_trials()]


def test_a_search_loop_on_postgres_writes_four_transactions_a_trial(postgres_url):  # noqa: F811
    name = f"onnxopt-test-{uuid.uuid4().hex[:12]}"
    try:
        study, writes = _run(postgres_url, name, trials=5)
        _check(study, 5)
        assert writes == 4 * 5
    finally:
        optuna.delete_study(study_name=name, storage=open_storage(postgres_url))


def test_reads_inside_a_batch_see_the_writes_queued_before_them(tmp_path):
    url = f"sqlite:///{tmp_path / 'study.db'}"
    storage = open_storage(url)
    study = optuna.create_study(storage=storage, study_name="s")
    other = open_storage(url, read_only=True)  # another process's view
    counter = WriteTransactions(storage.engine)
    with write_batch(storage):
        trial = study.ask()
        trial.suggest_int("a", 0, 9)
        trial.set_user_attr("worker", "w")
        assert counter.count == 1  # only the ask so far
        for seen in (storage.get_trial(trial._trial_id), study.get_trials(deepcopy=False)[0]):
            assert seen.user_attrs == {"worker": "w"} and set(seen.params) == {"a"}
        assert storage.get_trial_user_attrs(trial._trial_id) == {"worker": "w"}
        assert counter.count == 1  # reading them wrote nothing
        assert other.get_trial(trial._trial_id).user_attrs == {}  # not committed yet
        study.set_user_attr("note", 1)  # another write: the queue is committed first
        assert counter.count == 3
        assert other.get_trial(trial._trial_id).user_attrs == {"worker": "w"}
        trial.set_user_attr("metrics", {"accuracy": 0.5})
        study.tell(trial, 1.0)  # the queue, then the state
        assert counter.count == 5
    assert other.get_trial(trial._trial_id).user_attrs["metrics"] == {"accuracy": 0.5}
    assert other.get_trial(trial._trial_id).state.name == "COMPLETE"
    trial = study.ask()
    trial.set_user_attr("outside", 1)  # outside a batch: written at once
    assert counter.count == 7


def test_a_failed_write_in_a_batch_is_raised_and_nothing_of_the_batch_is_half_written(tmp_path):
    storage = open_storage(f"sqlite:///{tmp_path / 'study.db'}")
    study = optuna.create_study(storage=storage, study_name="s")
    trial = study.ask()
    study.tell(trial, 1.0)  # finished: Optuna refuses writes to it
    with pytest.raises(RuntimeError, match="finished"):
        with write_batch(storage):
            storage.set_trial_user_attr(trial._trial_id, "late", 1)
            storage.set_trial_user_attr(trial._trial_id, "later", 2)
    assert storage.get_trial(trial._trial_id).user_attrs == {}
