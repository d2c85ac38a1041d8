"""The Dockerfile installs onnxopt exactly as the README's set-up does, on any base that gives
Python; docker-compose.yml runs workers on a PostgreSQL study over loopback; the README, the
compose file and .ci/docker.sh (which builds and runs all this for real in CI) agree.
(No Docker daemon needed: the files are parsed.)"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
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


def build_args() -> dict[str, str]:
    """``ARG NAME=default`` of the Dockerfile (before and after FROM)."""
    args = {}
    for arg in instructions("ARG"):
        name, _, default = arg.partition("=")
        args[name] = default
    return args


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
    assert "pip install -e '.[dev,fpga,openvino]'" in quickstart
    # both README commands install through `make install`, which is that pip command
    for target in ("demo", "test"):
        prerequisites, _ = makefile_recipe(target)
        assert "install" in prerequisites, target
    _, install = makefile_recipe("install")
    assert install == ["$(PIP) install --quiet -e '.[dev,fpga,openvino]'"]
    commands = run_commands()
    assert ["make", "install"] in commands
    pips = [c for c in commands if "pip" in c[:3]]
    # the one other pip command: torch's CPU wheel, at the pyproject pin, before make install
    assert len(pips) == 1, pips
    (pip,) = pips
    assert f"torch=={torch_pin()}" in pip
    assert pip[pip.index("--index-url") + 1] == "$TORCH_INDEX_URL"
    assert build_args()["TORCH_INDEX_URL"] == "https://download.pytorch.org/whl/cpu"
    assert commands.index(pip) < commands.index(["make", "install"])
    assert f"pinned to `{torch_pin()}`" in quickstart.replace("\n", " ")


def test_dockerfile_finds_wheels_from_the_build_context_first():
    """docker/wheels/ (in the repository, empty but for its README) is copied and searched
    with --find-links: .ci/docker.sh puts the host's CPU wheel there."""
    (pip,) = [c for c in run_commands() if "pip" in c[:3]]
    wheels = pip[pip.index("--find-links") + 1]
    assert "docker/wheels/ " + wheels + "/" in instructions("COPY")
    assert ["rm", "-rf", wheels] in run_commands(), "the copied wheels stay in the image"
    assert (ROOT / "docker" / "wheels" / "README.md").is_file()
    assert "docker/wheels/*.whl" in (ROOT / ".gitignore").read_text().split()
    ignored = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert ".git" in ignored and "runs" in ignored
    assert not {"docker", "docker/wheels", "onnxopt", "configs", "pyproject.toml"} & set(ignored)


def test_dockerfile_copies_what_make_install_needs():
    copied = " ".join(instructions("COPY")).split()
    for name in ("pyproject.toml", "README.md", "Makefile", "onnxopt"):
        assert name in copied, name
    python = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["requires-python"]
    base = build_args()["BASE_IMAGE"]
    version = re.match(r"python:(\d+\.\d+)-slim$", base).group(1)
    assert f">={version}" in python, (base, python)


def test_the_base_image_is_a_build_argument_and_only_gives_python():
    """FROM ${BASE_IMAGE} (default python:3.11-slim); nothing else reads the argument, so the
    image's steps are the same on every base."""
    text = (ROOT / "Dockerfile").read_text()
    assert text.split("\n")[0].startswith("#")
    first = [k for k, _ in dockerfile()][:2]
    assert first == ["ARG", "FROM"], first
    assert instructions("FROM") == ["${BASE_IMAGE}"]
    uses = re.findall(r"\$\{?BASE_IMAGE\b", "\n".join(a for k, a in dockerfile() if k != "ARG"))
    assert len(uses) == 1, "BASE_IMAGE used past FROM"
    # the install steps call python/pip by name: the base's PATH decides which one
    for command in run_commands():
        assert not any(word.startswith(("/usr/local/bin/", "/opt/venv")) for word in command)


def test_configs_are_where_readme_compose_and_ci_run_them():
    copies = [c.split() for c in instructions("COPY")]
    assert ["configs", "/configs"] in copies
    readme = (ROOT / "README.md").read_text()
    docker = readme.split("\n## Docker")[1].split("\n## ")[0]
    runs = re.findall(r"docker run [^\n`]*search (/\S+\.toml)", docker)
    assert runs, "the README's Docker section has no docker run ... search example"
    ci = (ROOT / ".ci" / "docker.sh").read_text()
    for config in [*runs, *re.findall(r"config=(/configs/\S+\.toml)", ci)]:
        assert config.startswith("/configs/"), config
        assert (ROOT / "configs" / config.removeprefix("/configs/")).is_file(), config
    assert "/opt/onnxopt/configs" not in readme


def test_dockerfile_runs_onnxopt_as_a_non_root_user_on_a_runs_volume():
    users = instructions("USER")
    assert users and users[-1] not in ("root", "0"), users
    assert any(users[-1] in run and "useradd" in run for run in instructions("RUN"))
    assert [json.loads(e) for e in instructions("ENTRYPOINT")] == [["onnxopt"]]
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert "onnxopt" in scripts
    assert [json.loads(v) for v in instructions("VOLUME")] == [["/runs"]]


@pytest.fixture(scope="module")
def compose_text() -> str:
    return (ROOT / "docker-compose.yml").read_text()


@pytest.fixture(scope="module")
def compose(compose_text) -> dict:
    return yaml.safe_load(compose_text)


def _default(value: str) -> str:
    """``${VAR:-default}`` as its default; other text unchanged."""
    return re.sub(r"\$\{[A-Z_]+:-([^}]*)\}", r"\1", value)


def test_compose_has_a_healthy_postgres(compose):
    postgres = compose["services"]["postgres"]
    assert _default(postgres["image"]).startswith("postgres:")
    assert "pg_isready" in " ".join(postgres["healthcheck"]["test"])
    env = postgres["environment"]
    assert {"POSTGRES_USER", "POSTGRES_PASSWORD", "POSTGRES_DB", "PGPORT"} <= set(env)
    assert "listen_addresses=${ONNXOPT_POSTGRES_LISTEN:-127.0.0.1}" in postgres["command"]
    # pg_isready asks 127.0.0.1 at PGPORT: the default listen address
    assert "-h 127.0.0.1" in " ".join(postgres["healthcheck"]["test"])


def test_compose_needs_a_password_and_never_puts_it_in_a_url(compose, compose_text):
    assert "POSTGRES_PASSWORD:-" not in compose_text, "a fixed fallback password"
    required = re.compile(r"^\$\{POSTGRES_PASSWORD:\?.+\}$")
    assert required.match(compose["services"]["postgres"]["environment"]["POSTGRES_PASSWORD"])
    for name in ("worker", "onnxopt", "dashboard"):
        service = compose["services"][name]
        assert required.match(service["environment"]["PGPASSWORD"]), name
        words = " ".join(service.get("entrypoint", []) + service["command"])
        for url in re.findall(r"postgresql://\S+", words):
            assert re.match(r"postgresql://onnxopt@127\.0\.0\.1:", url), url
    assert ".env" in (ROOT / ".gitignore").read_text().split()


def test_compose_uses_only_the_hosts_loopback(compose):
    """No network of its own, nothing published: every service on the host's network, the
    server on 127.0.0.1 by default, every client pointed there."""
    assert "networks" not in compose
    for name, service in compose["services"].items():
        assert service["network_mode"] == "host", name
        assert "ports" not in service and "networks" not in service, name
    dashboard = compose["services"]["dashboard"]["command"]
    assert dashboard[dashboard.index("--host") + 1] == "127.0.0.1"


def test_compose_workers_search_one_postgres_study(compose):
    worker = compose["services"]["worker"]
    build = worker["build"]
    assert build["context"] == "."
    default_base = build_args()["BASE_IMAGE"]
    assert build["args"] == {"BASE_IMAGE": f"${{ONNXOPT_BASE_IMAGE:-{default_base}}}"}
    assert (ROOT / "Dockerfile").is_file()
    assert worker["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert _default(str(worker["deploy"]["replicas"])) == "2"
    command = " ".join(worker["entrypoint"] + worker["command"])
    assert "onnxopt search /configs/" in command
    url = "postgresql://onnxopt@127.0.0.1:${ONNXOPT_POSTGRES_PORT:-5432}/onnxopt"
    assert f"--storage {url} " in command
    assert "--study " in command
    config = re.search(r"/configs/\$\{ONNXOPT_CONFIG:-([^}]+)\}", command).group(1)
    assert (ROOT / "configs" / config).is_file(), config
    env = compose["services"]["postgres"]["environment"]
    user, db = env["POSTGRES_USER"], env["POSTGRES_DB"]
    assert f"postgresql://{user}@" in command and f"/{db} " in command
    assert _default(env["PGPORT"]) == "5432"
    mounts = {v.split(":")[-2] if v.count(":") > 1 else v.split(":")[1] for v in worker["volumes"]}
    assert {"/configs", "/runs"} <= mounts
    assert "runs" in compose["volumes"]


def test_compose_workers_have_their_own_identity_and_run_directory(compose):
    """On the host's network every container has the host's name, and each its own pid
    namespace (pid 1 in each): onnxopt's worker ids carry the pid namespace, so the containers
    need no `pid: host`; each worker makes its own run directory (mktemp: the pid is no longer
    unique)."""
    for name, service in compose["services"].items():
        assert "pid" not in service, name
    (command,) = compose["services"]["worker"]["command"]
    assert command.startswith("exec onnxopt search ")
    assert '--run-dir "$$(mktemp -d "/runs/$$(hostname)-XXXXXX")" ' in command


def test_ci_builds_and_runs_the_docker_files():
    run = (ROOT / ".ci" / "run").read_text()
    lines = [line for line in run.splitlines() if line and not line.startswith("#")]
    assert lines[-2:] == [".ci/qemu.sh .ci/postgres.sh make test", ".ci/docker.sh"]
    for script in (".ci/docker.sh", "docker/postgres/entrypoint.sh"):
        assert os.access(ROOT / script, os.X_OK), script
    ci = (ROOT / ".ci" / "docker.sh").read_text()
    assert "docker build --network host" in ci and '--build-arg "BASE_IMAGE=$BASE"' in ci
    assert "debootstrap --variant=minbase" in ci
    assert "trap cleanup EXIT" in ci


def test_local_postgres_image_offers_what_compose_uses():
    dockerfile_text = (ROOT / "docker" / "postgres" / "Dockerfile").read_text()
    assert re.search(r"^ARG BASE_IMAGE=\S+\nFROM \$\{BASE_IMAGE\}$", dockerfile_text, re.M)
    assert "apt-get install -y --no-install-recommends postgresql" in dockerfile_text
    assert 'CMD ["postgres"]' in dockerfile_text and "USER postgres" in dockerfile_text


def test_local_postgres_entrypoint_refuses_to_start_without_a_password(tmp_path):
    env = {"PATH": os.environ["PATH"], "PGDATA": str(tmp_path / "data")}
    done = subprocess.run(
        ["sh", str(ROOT / "docker" / "postgres" / "entrypoint.sh"), "true"],
        env=env, capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert done.returncode == 2
    assert "POSTGRES_PASSWORD" in done.stderr
    assert not (tmp_path / "data").exists()
