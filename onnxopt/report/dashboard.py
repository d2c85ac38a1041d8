"""``onnxopt dashboard``: optuna-dashboard on a search's storage.

The dashboard shows every study of the storage and can also delete them, so it listens on
the loopback interface unless told otherwise.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable

from onnxopt.errors import UsageError
from onnxopt.optimizer.search.study import STUDY_NAME, load_study, open_storage, resolve_source

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8080


def is_loopback(host: str) -> bool:
    """Whether ``host`` is a loopback address (``localhost`` counts)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a host name: it may resolve to any interface


def exposure_warning(host: str, port: int) -> str | None:
    """The warning for a listening address other machines can reach (None for loopback)."""
    if is_loopback(host):
        return None
    return (
        f"warning: the dashboard listens on {host}:{port}, not on loopback: anyone who can "
        "reach this address can read every study in the storage and delete it"
    )


def serve_dashboard(
    source: str,
    study_name: str | None = None,
    *,
    host: str = DEFAULT_HOST,
    port: int = DEFAULT_PORT,
    echo: Callable[[str], None] = print,
) -> None:
    """Serve optuna-dashboard on the storage of ``source`` until interrupted.

    Args:
        source: A run directory, journal file or storage URL.
        study_name: The study to link to (it must exist; the dashboard lists all of them).
        host: Address to listen on.
        port: Port to listen on.
        echo: Prints the URL (and the warning for a non-loopback host).

    Raises:
        UsageError: When the study does not exist or the address cannot be used.
    """
    from optuna_dashboard import run_server

    spec = resolve_source(source)
    name = study_name or STUDY_NAME
    load_study(spec, name)  # one clear line when there is no such study
    storage = open_storage(spec)  # the dashboard's own storage object: journal lock, driver
    study_id = storage.get_study_id_from_name(name)  # the id in the dashboard's URLs
    warning = exposure_warning(host, port)
    if warning:
        echo(warning)
    shown = f"[{host}]" if ":" in host else host
    echo(f"optuna-dashboard for study {name!r}: http://{shown}:{port}/dashboard/studies/{study_id}")
    try:
        run_server(storage, host=host, port=port)
    except OSError as exc:
        raise UsageError(f"cannot listen on {host}:{port} ({exc.strerror or exc})") from None
