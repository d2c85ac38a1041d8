"""The Dockerfile installs onnxopt exactly as the README's set-up does; docker-compose.yml
runs workers on a PostgreSQL study. (No Docker daemon needed: the files are parsed.)"""

from __future__ import annotations

import json
import re
import shlex
import tomllib
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]


def dockerfile() -> list[tuple[str, str]]:
    """``(INSTRUCTION, arguments)`` pairs, continuation lines joined, comments dropped."""
    lines, current = [], ""
    for raw in (ROOT / "Dockerfile").read_text().splitlines():
        if raw.lstrip().startswith("#") or not raw.strip():
            continue
        current += raw.rstrip().removesuffix("\\") + " "
        if not raw.rstrip().endswith("\\"):
            lines.append(current.strip())
            current = ""
    out = []
    for line in lines:
        keyword, _, args = line.partition(" ")
        out.append((keyword.upper(), " ".join(args.split())))
    return out


def instructions(keyword: str) -> list[str]:
    return [args for k, args in dockerfile() if k == keyword]


def run_commands() -> list[list[str]]:
    """Every shell command of every RUN, split on ``&&``, as argv lists."""
    commands = []
    for run in instructions("RUN"):
        commands += [shlex.split(part) for part in run.split("&&")]
    return commands


def makefile_recipe(target: str) -> tuple[list[str], list[str]]:
    """``(prerequisites, recipe lines)`` of a Makefile target."""
    text = (ROOT / "Makefile").read_text()
    match = re.search(rf"^{target}:(.*)\n((?:\t.*\n?)*)", text, re.M)
    assert match, f"no {target} target in the Makefile"
    return match.group(1).split(), [line.strip() for line in match.group(2).splitlines()]


def torch_pin() -> str:
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    (pin,) = [d for d in deps if re.match(r"torch\b", d)]
    assert pin.startswith("torch=="), f"torch must be pinned exactly in pyproject.toml: {pin}"
    return pin.removeprefix("torch==")


def test_dockerfile_runs_the_readme_install_step():
    readme = (ROOT / "README.md").read_text()
    quickstart = readme.split("## Quickstart")[1].split("\n## ")[0]
    assert "make demo" in quickstart and "make test" in quickstart
    assert "pip install -e '.[dev,fpga]'" in quickstart
    # both README commands install through `make install`, which is that pip command
    for target in ("demo", "test"):
        prerequisites, _ = makefile_recipe(target)
        assert "install" in prerequisites, target
    _, install = makefile_recipe("install")
    assert install == ["$(PIP) install --quiet -e '.[dev,fpga]'"]
    commands = run_commands()
    assert ["make", "install"] in commands
    pips = [c for c in commands if "pip" in c[:3]]
    # the one other pip command: torch's CPU wheel, at the pyproject pin, before make install
    assert len(pips) == 1, pips
    assert f"torch=={torch_pin()}" in pips[0] and "--index-url" in pips[0]
    assert commands.index(pips[0]) < commands.index(["make", "install"])
    assert f"pinned to `{torch_pin()}`" in quickstart.replace("\n", " ")


def test_dockerfile_copies_what_make_install_needs():
    copied = " ".join(instructions("COPY")).split()
    for name in ("pyproject.toml", "README.md", "Makefile", "onnxopt"):
        assert name in copied, name
    python = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["requires-python"]
    (base,) = instructions("FROM")
    version = re.match(r"python:(\d+\.\d+)", base).group(1)
    assert f">={version}" in python, (base, python)


def test_dockerfile_runs_onnxopt_as_a_non_root_user_on_a_runs_volume():
    users = instructions("USER")
    assert users and users[-1] not in ("root", "0"), users
    assert any(users[-1] in run and "useradd" in run for run in instructions("RUN"))
    assert [json.loads(e) for e in instructions("ENTRYPOINT")] == [["onnxopt"]]
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert "onnxopt" in scripts
    assert [json.loads(v) for v in instructions("VOLUME")] == [["/runs"]]


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def test_compose_has_a_healthy_postgres(compose):
    postgres = compose["services"]["postgres"]
    assert postgres["image"].startswith("postgres:")
    assert "pg_isready" in " ".join(postgres["healthcheck"]["test"])
    env = postgres["environment"]
    assert {"POSTGRES_USER", "POSTGRES_PASSWORD", "POSTGRES_DB"} <= set(env)


def test_compose_workers_search_one_postgres_study(compose):
    worker = compose["services"]["worker"]
    assert worker["build"] in (".", {"context": "."}, {"context": ".", "dockerfile": "Dockerfile"})
    assert (ROOT / "Dockerfile").is_file()
    assert worker["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert "replicas" in worker["deploy"]
    command = " ".join(worker["entrypoint"] + worker["command"])
    assert "onnxopt search /configs/" in command
    assert "--storage postgresql://" in command and "@postgres:5432/" in command
    assert "--study " in command and "--run-dir /runs/" in command
    config = re.search(r"/configs/\$\{ONNXOPT_CONFIG:-([^}]+)\}", command).group(1)
    assert (ROOT / "configs" / config).is_file(), config
    env = compose["services"]["postgres"]["environment"]
    user, db = env["POSTGRES_USER"], env["POSTGRES_DB"]
    assert f"postgresql://{user}:" in command and f":5432/{db} " in command
    mounts = {v.split(":")[1] for v in worker["volumes"]}
    assert {"/configs", "/runs"} <= mounts
    assert "runs" in compose["volumes"]
