"""Host-side checks of .ci/docker.sh: what the containers left on the host and in PostgreSQL.

    python .ci/docker_check.py files RUN_DIR --uid 10001
    python .ci/docker_check.py study URL STUDY --n-trials 12 --workers 2 --status-json FILE

``files``: every file and folder under RUN_DIR belongs to the container's user and is writable
by it only; the exported models pass onnx's full check and load in onnxruntime (``.onnx`` and
``.ort``), and one batch runs. ``study``: the study holds exactly ``n_trials`` complete trials,
no point twice, from the given number of workers, and ``onnxopt status --json`` (run in a
container) says the same. Imports nothing from onnxopt: it checks the image's work from outside.
Exit 0 when every check passes, 1 otherwise (each failure printed).
"""

from __future__ import annotations

import argparse
import json
import os
import stat
import sys
from collections import Counter
from pathlib import Path


def _fail(problems: list[str]) -> int:
    for problem in problems:
        print(f"docker_check: FAILED: {problem}", file=sys.stderr)
    return 1 if problems else 0


def _listing(root: Path) -> list[Path]:
    return sorted([root, *root.rglob("*")])


def check_owner_and_modes(root: Path, uid: int) -> list[str]:
    """Every entry owned by ``uid``, no group/other write bit, files readable by the owner."""
    problems = []
    for path in _listing(root):
        info = path.lstat()
        mode = stat.filemode(info.st_mode)
        print(f"  {mode} {info.st_uid}:{info.st_gid} {info.st_size:>9} {path.relative_to(root)}")
        if info.st_uid != uid:
            problems.append(f"{path} belongs to uid {info.st_uid}, not the container's {uid}")
        if info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
            problems.append(f"{path} is writable by group or others ({mode})")
        if not stat.S_ISDIR(info.st_mode) and not stat.S_ISREG(info.st_mode):
            problems.append(f"{path} is neither a file nor a folder ({mode})")
        if stat.S_ISREG(info.st_mode) and not info.st_mode & stat.S_IRUSR:
            problems.append(f"{path} is not readable by its owner ({mode})")
    return problems


def _feed(session) -> dict:
    import numpy as np

    feeds = {}
    for arg in session.get_inputs():
        shape = [1 if not isinstance(d, int) else d for d in arg.shape]
        feeds[arg.name] = np.zeros(shape, dtype=np.float32)
    return feeds


def check_models(root: Path) -> tuple[list[str], int]:
    """onnx.checker (full) on every .onnx; onnxruntime loads every .onnx/.ort and runs one batch."""
    import onnx
    import onnxruntime as ort

    problems, count = [], 0
    models = sorted(root.rglob("*.onnx")) + sorted(root.rglob("*.ort"))
    for path in models:
        try:
            if path.suffix == ".onnx":
                onnx.checker.check_model(str(path), full_check=True)
            session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
            session.run(None, _feed(session))
        except Exception as exc:  # report every bad file, not only the first
            problems.append(f"{path}: {type(exc).__name__}: {str(exc).splitlines()[0]}")
        else:
            count += 1
    return problems, count


def files(args: argparse.Namespace) -> int:
    root = Path(args.run_dir)
    if not root.is_dir():
        return _fail([f"{root} does not exist: the container wrote nothing on the host"])
    print(f"files the container search wrote in {root} (mode uid:gid bytes path):")
    problems = check_owner_and_modes(root, args.uid)
    for required in ("base.onnx", "report.json", "manifest.json", "study.journal"):
        if not (root / required).is_file():
            problems.append(f"{root / required} is missing")
    exported = sorted((root / "pareto").glob("trial_*.onnx"))
    if not exported:
        problems.append(f"no exported trial_*.onnx in {root / 'pareto'}")
    model_problems, count = check_models(root)
    problems += model_problems
    if problems:
        return _fail(problems)
    import onnxruntime as ort

    print(
        f"OK: {count} model files pass onnx.checker (full check) and run in onnxruntime "
        f"{ort.__version__}; {len(exported)} Pareto exports; all owned by uid {args.uid}, "
        "none writable by group or others"
    )
    return 0


def _storage_url(url: str) -> str:
    # the host's SQLAlchemy may map a plain postgresql:// to psycopg 3; psycopg2 is what we have
    if url.startswith("postgresql://"):
        return "postgresql+psycopg2://" + url.removeprefix("postgresql://")
    return url


def study(args: argparse.Namespace) -> int:
    import optuna
    from optuna.trial import TrialState

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    loaded = optuna.load_study(study_name=args.study, storage=_storage_url(args.url))
    trials = loaded.get_trials(deepcopy=False)
    problems = []
    states = Counter(t.state.name for t in trials)
    points = Counter(tuple(sorted(t.params.items())) for t in trials)
    workers = Counter(t.user_attrs.get("worker", "?") for t in trials)
    print(
        f"study {args.study!r}: {len(trials)} trials {dict(states)}, "
        f"{len(points)} distinct points, per worker: "
        + ", ".join(f"{w} {n}" for w, n in sorted(workers.items()))
    )
    if len(trials) != args.n_trials:
        problems.append(f"the study holds {len(trials)} trials, not n_trials = {args.n_trials}")
    if states.get(TrialState.COMPLETE.name, 0) != len(trials):
        problems.append(f"not every trial is complete: {dict(states)}")
    duplicates = [p for p, n in points.items() if n > 1]
    if duplicates:
        problems.append(f"{len(duplicates)} points ran more than once, e.g. {duplicates[0]}")
    if len(workers) != args.workers:
        problems.append(f"trials came from {len(workers)} workers, not {args.workers}")
    if args.status_json:
        status = json.loads(Path(args.status_json).read_text())
        finished = status["counts"]["complete"]
        print(
            f"onnxopt status (in a container): n_trials {status['n_trials']}, done "
            f"{status['done']}, {finished} complete, {len(status['workers'])} workers seen"
        )
        if (status["n_trials"], finished, status["done"]) != (args.n_trials, args.n_trials, True):
            problems.append(f"onnxopt status disagrees: {status['counts']}")
        if len(status["workers"]) != args.workers:
            problems.append(f"onnxopt status saw {len(status['workers'])} workers")
    if problems:
        return _fail(problems)
    print(f"OK: exactly {args.n_trials} trials, no point twice, {args.workers} workers")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p_files = sub.add_parser("files", help="a container search's run directory on the host")
    p_files.add_argument("run_dir")
    p_files.add_argument("--uid", type=int, required=True, help="the container user's uid")
    p_files.set_defaults(run=files)
    p_study = sub.add_parser("study", help="a study several worker containers shared")
    p_study.add_argument("url", help="postgresql://USER@HOST:PORT/DB (password: PGPASSWORD)")
    p_study.add_argument("study")
    p_study.add_argument("--n-trials", type=int, required=True)
    p_study.add_argument("--workers", type=int, required=True)
    p_study.add_argument("--status-json", help="what `onnxopt status --json` printed")
    p_study.set_defaults(run=study)
    args = parser.parse_args(argv)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
