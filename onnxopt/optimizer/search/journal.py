"""The journal file: checked record by record before Optuna replays it, repaired only by writers.

Optuna's journal file is one JSON record per line, appended under a lock. What a reader can
meet, and what onnxopt says to each (one line naming the file, the record and the recovery;
:class:`~onnxopt.errors.StorageDamagedError`):

* a record that is not UTF-8 text or not JSON (a garbled line, bit flips, a block of NUL
  bytes, a bad last line), or JSON that Optuna cannot replay (an unknown op code, a record
  naming a study or trial that does not exist): the first damaged record is found (a replay
  that fails on a prefix fails on every longer one, so a bisection over prefixes finds it),
  and the message says which trials the records before it hold and how to keep them (cut the
  file there);
* a folder where the file should be.

A last line without its newline is a record a killed writer left half-written: writers cut it
(:func:`cut_half_written`, under the journal lock) and say which trial it was about; readers
skip it, as Optuna's reader does, and never write.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
from collections.abc import Callable, Generator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from optuna.storages import BaseStorage
from optuna.storages.journal import (
    BaseJournalBackend,
    JournalFileBackend,
    JournalFileOpenLock,
    JournalStorage,
)

from onnxopt.errors import StorageDamagedError, UsageError, first_line

_TRIAL_ID = re.compile(rb'"trial_id"\s*:\s*(\d+)')


@dataclass(frozen=True)
class Damage:
    """The first damaged record of a journal file.

    Attributes:
        record: Its number (1-based; one record per line).
        offset: The byte offset where its line starts (the size to cut the file to).
        reason: What is wrong with it.
    """

    record: int
    offset: int
    reason: str


@dataclass(frozen=True)
class Scan:
    """A journal file read record by record.

    Attributes:
        records: The records before the first damaged one (all of them when none is).
        offsets: Where each record's line starts.
        damage: The first damaged record (None when every complete line is a record).
        tail: Bytes after the last newline (a record being written, or a dead writer's).
    """

    records: list[dict[str, Any]]
    offsets: list[int]
    damage: Damage | None
    tail: bytes
    size: int


def scan(path: Path) -> Scan:
    """Read every complete line of a journal file as a record, stopping at the first bad one.

    Raises:
        UsageError: When the path is a folder or cannot be read.
    """
    data = _read(path)
    records: list[dict[str, Any]] = []
    offsets: list[int] = []
    start = 0
    while True:
        end = data.find(b"\n", start)
        if end < 0:
            break
        line = data[start : end + 1]
        reason = _record_problem(line)
        if reason is not None:
            return Scan(records, offsets, Damage(len(records) + 1, start, reason), b"", len(data))
        records.append(json.loads(line))
        offsets.append(start)
        start = end + 1
    return Scan(records, offsets, None, data[start:], len(data))


def _read(path: Path) -> bytes:
    if path.is_dir():
        raise UsageError(
            f"{path} is a folder, not a journal file; move it away, or restore the journal from "
            "a backup"
        )
    try:
        return path.read_bytes()
    except OSError as exc:
        raise UsageError(f"cannot read the journal {path}: {exc.strerror or exc}") from None


def _record_problem(line: bytes) -> str | None:
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError as exc:
        return f"not UTF-8 text (byte 0x{line[exc.start]:02x} at column {exc.start + 1})"
    try:
        record = json.loads(text)
    except json.JSONDecodeError as exc:
        if "\x00" in text:
            return "a block of NUL bytes, not a record"
        return f"not valid JSON ({exc.msg} at column {exc.colno})"
    if not isinstance(record, dict) or not isinstance(record.get("op_code"), int):
        return "not an Optuna journal record (no op_code)"
    return None


class BatchedJournalBackend(JournalFileBackend):
    """Optuna's journal file backend, with the fsyncs of a batch of appends made once.

    Every append is written whole under the journal lock, as Optuna writes it, so other
    workers and a killed writer's successor see it at once (a killed process loses nothing
    it wrote: the data is in the kernel's page cache). Outside a batch each append is
    fsync'ed, as Optuna does; inside :meth:`batch` (the steps of one trial) the file is
    fsync'ed once when the batch ends, which is what durability across a power loss needs
    (a batch that need not be durable by itself leaves the fsync to the next one).
    """

    def __init__(self, file_path: str, lock_obj: JournalFileOpenLock) -> None:
        super().__init__(file_path, lock_obj=lock_obj)
        self._path = file_path
        self._lock_obj = lock_obj
        self._depth = 0
        self._unsynced = False

    def append_logs(self, logs: list[dict[str, Any]]) -> None:
        if self._depth == 0:
            super().append_logs(logs)
            return
        text = "\n".join(json.dumps(log, separators=(",", ":")) for log in logs) + "\n"
        with _locked(self._lock_obj), open(self._path, "ab") as f:
            f.write(text.encode("utf-8"))
        self._unsynced = True

    @contextlib.contextmanager
    def batch(self, durable: bool = True) -> Generator[None, None, None]:
        """Appends inside are fsync'ed once, when the outermost batch ends; a batch that
        need not survive a power loss (``durable=False``: a trial being started, which would
        run again) leaves its fsync to the next durable write (fsync covers the whole file)."""
        self._depth += 1
        try:
            yield
        finally:
            self._depth -= 1
            if self._depth == 0 and self._unsynced and durable:
                self._unsynced = False
                with open(self._path, "ab") as f:
                    os.fsync(f.fileno())


@contextlib.contextmanager
def _locked(lock: JournalFileOpenLock) -> Generator[None, None, None]:
    lock.acquire()
    try:
        yield
    finally:
        lock.release()


class BatchedJournalStorage(JournalStorage):
    """A journal storage whose trial steps can be fsync'ed as one batch (:meth:`batch`)."""

    def __init__(self, backend: BatchedJournalBackend) -> None:
        super().__init__(backend)
        self.batched_backend = backend

    def batch(self, durable: bool = True) -> contextlib.AbstractContextManager[None]:
        """Writes inside are durable (fsync'ed) when the batch ends (``durable=False``: when
        the next durable batch ends)."""
        return self.batched_backend.batch(durable)


class RecordsBackend(BaseJournalBackend):
    """Records held in memory (replays a prefix of a journal; nothing is written)."""

    def __init__(self, records: list[dict[str, Any]]) -> None:
        self.records = records

    def read_logs(self, log_number_from: int) -> Generator[dict[str, Any], None, None]:
        yield from self.records[log_number_from:]

    def append_logs(self, logs: list[dict[str, Any]]) -> None:
        raise UsageError("the records of a journal replay are read-only")


class ReadOnlyJournalBackend(JournalFileBackend):
    """Optuna's journal file backend for readers: an existing file, no lock, no writes."""

    def append_logs(self, logs: list[dict[str, Any]]) -> None:
        raise UsageError("the journal was opened read-only (status and select never write)")


def _replays(records: list[dict[str, Any]]) -> JournalStorage | None:
    try:
        return JournalStorage(RecordsBackend(records))
    except Exception:  # Optuna's replay: AssertionError (op code), KeyError, IndexError, ...
        return None


def first_unreplayable(records: list[dict[str, Any]]) -> int | None:
    """The 1-based number of the first record Optuna cannot replay (None: all replay)."""
    if _replays(records) is not None:
        return None
    good, bad = 0, len(records)  # records[:good] replays, records[:bad] does not
    while bad - good > 1:
        mid = (good + bad) // 2
        if _replays(records[:mid]) is not None:
            good = mid
        else:
            bad = mid
    return bad


def held_trials(storage: BaseStorage) -> str:
    """What a (partial) journal holds: ``study 'x' with trials 0-9``, for messages."""
    parts = []
    for study in storage.get_all_studies():
        study_id = storage.get_study_id_from_name(study.study_name)
        trials = storage.get_all_trials(study_id, deepcopy=False)
        held = {0: "no trial", 1: "trial 0"}.get(len(trials), f"trials 0-{len(trials) - 1}")
        parts.append(f"study {study.study_name!r} with {held}")
    return ", ".join(parts) or "no study"


def check(path: Path, found: Scan) -> None:
    """Refuse a journal with a damaged record, with the recovery in the message.

    Raises:
        StorageDamagedError: Naming the file, the record, what the records before it hold
            and how to keep them.
    """
    damage = found.damage
    records = found.records
    if damage is None:
        bad = first_unreplayable(records)
        if bad is None:
            return
        damage = Damage(bad, found.offsets[bad - 1], _replay_reason(records, bad))
        records = records[: bad - 1]
    raise StorageDamagedError(damaged_message(path, damage, records, found.size))


def _replay_reason(records: list[dict[str, Any]], bad: int) -> str:
    try:
        JournalStorage(RecordsBackend(records[:bad]))
    except Exception as exc:
        op = records[bad - 1].get("op_code")
        why = f"{type(exc).__name__} {first_line(exc)}".strip()
        return f"a record Optuna cannot replay (op code {op}: {why})"
    return "a record Optuna cannot replay"  # pragma: no cover (bisection found it failing)


def damaged_message(path: Path, damage: Damage, before: list[dict[str, Any]], size: int) -> str:
    """The one line for a damaged journal: what, where, what is kept, how to recover."""
    where = f"{path} is damaged at record {damage.record} (byte {damage.offset:,} of {size:,})"
    if damage.offset == 0:
        return (
            f"{where}: {damage.reason}; it is not an Optuna journal, or nothing in it can be "
            "read: restore it from a backup, or start a new search with --restart (the file "
            "is moved aside)"
        )
    kept = _replays(before)
    held = held_trials(kept) if kept is not None else "nothing readable"
    return (
        f"{where}: {damage.reason}; the {len(before)} records before it hold {held}. To keep "
        f"them: cp {path} {path}.bak && truncate -s {damage.offset} {path}, then run again "
        "with --resume (what later records wrote is lost: those trials run again); or start "
        "a new search with --restart"
    )


def cut_half_written(path: Path, lock: Callable[[], Any]) -> bytes:
    """Cut a record a killed writer left without its newline at the end of the file.

    Writers append whole lines under the lock, so under the lock a last line without its
    newline can only be a dead writer's. Optuna skips such a line but would glue the next
    record onto it and then fail to read the file.

    Args:
        path: The journal file.
        lock: Returns the journal lock (a context manager).

    Returns:
        The bytes cut (empty when the file ended with a whole record).
    """
    if not path.is_file():
        return b""
    with lock(), open(path, "rb+") as f:
        size = f.seek(0, 2)
        if size == 0:
            return b""
        window = min(size, 1 << 20)
        f.seek(size - window)
        tail = f.read()
        if tail.endswith(b"\n"):
            return b""
        cut = tail.rfind(b"\n")
        if cut < 0 and size > window:
            return b""  # a record longer than the window: leave it to the check
        keep = size - len(tail) + cut + 1
        f.truncate(keep)
        return tail[cut + 1 :]


def cut_note(path: Path, cut: bytes, storage: BaseStorage) -> str:
    """What a cut half-written record was about, for the user (which trial lost an update)."""
    match = _TRIAL_ID.search(cut)
    about = (
        "it names no trial (a study-level write, a trial being created, or its trial id was "
        "cut off); a trial it left unfinished runs again"
    )
    if match:
        try:
            number = storage.get_trial(int(match.group(1))).number
            about = (
                f"an update of trial {number}, which is lost (the trial runs again if that "
                "left it unfinished)"
            )
        except KeyError:
            about = "a trial being created"
    return (
        f"{path.name}: cut a half-written last record ({len(cut):,} bytes) that a killed "
        f"writer left: {about}"
    )
