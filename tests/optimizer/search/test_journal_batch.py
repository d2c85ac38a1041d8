"""Journal writes of one trial step are fsync'ed once, and seen by other readers at once."""

from __future__ import annotations

import os

import optuna
from optuna.storages.journal import JournalFileBackend, JournalStorage

from onnxopt.optimizer.search.storage import open_storage, write_batch


def _count_fsyncs(monkeypatch) -> list[int]:
    calls: list[int] = []
    real = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: calls.append(fd) or real(fd))
    return calls


def test_a_batch_of_trial_writes_is_one_fsync_and_outside_each_write_is_one(
    tmp_path, monkeypatch
):
    path = tmp_path / "study.journal"
    storage = open_storage(str(path))
    study = optuna.create_study(storage=storage, study_name="s")
    calls = _count_fsyncs(monkeypatch)
    with write_batch(storage):
        trial = study.ask()
        for name in ("a", "b", "c"):
            trial.suggest_categorical(name, [1, 2, 3])
        trial.set_user_attr("worker", "w")
        with write_batch(storage):  # nested: still one fsync, at the outer end
            trial.set_user_attr("metrics", {"accuracy": 0.5})
        assert calls == []
        # written already: another process reading the file sees every record
        reader = JournalStorage(JournalFileBackend(str(path)))
        seen = reader.get_all_trials(reader.get_study_id_from_name("s"))[0]
        assert seen.user_attrs == {"worker": "w", "metrics": {"accuracy": 0.5}}
        assert set(seen.params) == {"a", "b", "c"}
        study.tell(trial, 1.0)
    assert len(calls) == 1
    trial = study.ask()
    trial.set_user_attr("worker", "w")
    assert len(calls) == 3  # outside a batch: every write fsync'ed, as Optuna does


def test_a_batch_that_need_not_be_durable_leaves_its_fsync_to_the_next(tmp_path, monkeypatch):
    storage = open_storage(str(tmp_path / "study.journal"))
    study = optuna.create_study(storage=storage, study_name="s")
    calls = _count_fsyncs(monkeypatch)
    with write_batch(storage, durable=False):
        trial = study.ask()
        trial.suggest_int("a", 0, 9)
    assert calls == []
    with write_batch(storage):
        study.tell(trial, 1.0)
    assert len(calls) == 1
    with write_batch(storage):  # nothing written: nothing to fsync
        study.get_trials()
    assert len(calls) == 1


def test_a_search_loop_makes_one_fsync_per_trial(tmp_path, monkeypatch):
    from onnxopt.optimizer.search.worker import TrialLoop

    storage = open_storage(str(tmp_path / "study.journal"))
    study = optuna.create_study(storage=storage, study_name="s")

    class Objective:
        def suggest(self, trial):
            return {k: trial.suggest_int(k, 0, 9) for k in ("a", "b", "c", "d")}

        def evaluate(self, trial, choice):
            for key in ("config", "metrics", "constraints", "model_sha256", "feasible"):
                trial.set_user_attr(key, sum(choice.values()))
            return [float(sum(choice.values()))]

    calls = _count_fsyncs(monkeypatch)
    done = TrialLoop(study, storage, Objective(), limit=5).run()
    assert done == 5
    assert len(calls) == 5
    trials = study.get_trials()
    assert [t.state.name for t in trials] == ["COMPLETE"] * 5
    assert all(t.user_attrs["metrics"] == t.value for t in trials)
