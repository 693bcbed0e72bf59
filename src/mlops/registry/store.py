"""A sqlite MLflow store (the embedded ``sqlite:///mlflow.db`` with its artifacts in ``mlartifacts/`` beside it)
that can be carried from one folder or runner to another, and that is checked before MLflow touches it.

MLflow writes absolute artifact paths into the database. When the database's folder moved (restored on another
runner, copied elsewhere), ``prepare`` rewrites the paths that pointed under the old folder to the same paths under
the new one, once, in one transaction; after that the store works as if it had been built here.

A store that is not a sqlite database, is corrupt or truncated, was written by a newer MLflow, or is an empty
database beside existing artifacts, is one clear error: MLflow would otherwise fail with pages of tracebacks, or
quietly start an empty registry in its place.
"""

from __future__ import annotations

import contextlib
import fcntl
import re
import sqlite3
from collections.abc import Iterator
from importlib.resources import files
from pathlib import Path

from mlops.errors import MlopsError

ARTIFACTS_DIR = "mlartifacts"
SQLITE_PREFIX = "sqlite:///"
SQLITE_HEADER = b"SQLite format 3\x00"
# Where MLflow keeps artifact locations; a relocation rewrites exactly these.
LOCATION_COLUMNS = {
    "experiments": ("artifact_location",),
    "runs": ("artifact_uri",),
    "logged_models": ("artifact_location",),
    "model_versions": ("source", "storage_location"),
}
# An experiment's location under a store's folder: <root>/mlartifacts or <root>/mlruns/<id>.
EXPERIMENT_LOCATION = re.compile(r"^(?:file://)?(?P<root>/.*?)/(?:mlartifacts|mlruns/[^/]+)$")


class StoreError(MlopsError):
    """The local MLflow store cannot be used as it is."""


def database_path(uri: str) -> Path | None:
    """The sqlite file behind a tracking URI; None for a server or another database."""
    if not uri.startswith(SQLITE_PREFIX):
        return None
    return Path(uri.removeprefix(SQLITE_PREFIX).split("?", 1)[0])


@contextlib.contextmanager
def exclusive(uri: str) -> Iterator[None]:
    """Registry changes to one sqlite store take turns across processes (a lock file beside the database): two
    deploys at once would otherwise both register the same commit and race on the same registry tags. A server's
    store serialises its own writes; deploy's check-after-create covers what is left there."""
    database = database_path(uri)
    if database is None or not database.parent.is_dir():
        yield
        return
    with database.with_name(f"{database.name}.lock").open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def artifact_location(uri: str) -> str | None:
    """Where a new experiment in this store keeps its artifacts: mlartifacts/ beside the database."""
    database = database_path(uri)
    return None if database is None else str(database.resolve().parent / ARTIFACTS_DIR)


def _known_revisions() -> set[str]:
    versions = files("mlflow.store.db_migrations") / "versions"
    pattern = re.compile(r"^revision = [\"'](\w+)[\"']", re.MULTILINE)
    scripts = [path for path in versions.iterdir() if path.name.endswith(".py")]
    return {revision for path in scripts for revision in pattern.findall(path.read_text())}


def _unreadable(database: Path, reason: str) -> StoreError:
    return StoreError(
        f"the MLflow store {database} is not a readable SQLite database ({reason}): restore it from a backup or "
        "the last deploy's registry artifact; nothing was changed"
    )


def _check(database: Path, connection: sqlite3.Connection) -> None:
    try:
        integrity = connection.execute("pragma quick_check").fetchone()[0]
        tables = {row[0] for row in connection.execute("select name from sqlite_master where type = 'table'")}
    except sqlite3.DatabaseError as error:
        integrity = str(error)
    if integrity != "ok":
        raise _unreadable(database, integrity)
    if "alembic_version" not in tables:
        if tables:
            raise StoreError(f"{database} is a sqlite database but not an MLflow store: move it away or fix the URI")
        return
    revision = connection.execute("select version_num from alembic_version").fetchone()
    if revision is not None and revision[0] not in _known_revisions():
        from mlflow import __version__

        raise StoreError(
            f"{database} was written by a newer MLflow (schema revision {revision[0]} is unknown to mlflow "
            f"{__version__}): use the MLflow version that wrote it; nothing was changed"
        )


def _relocate(database: Path, connection: sqlite3.Connection) -> None:
    here = str(database.resolve().parent)
    roots = set()
    for (location,) in connection.execute("select artifact_location from experiments"):
        match = EXPERIMENT_LOCATION.match(location or "")
        if match is None or match["root"] == here:
            continue
        below = location[match.end("root") :]
        if not Path(match["root"] + below).exists() and Path(here + below).exists():
            roots.add(match["root"])
    if not roots:
        return
    with connection:  # one transaction: all paths move, or none
        for old in roots:
            for prefix in ("", "file://"):
                for table, columns in LOCATION_COLUMNS.items():
                    for column in columns:
                        connection.execute(
                            f"update {table} set {column} = ? || substr({column}, ?) where {column} like ? escape '\\'",
                            (f"{prefix}{here}/", len(prefix + old) + 2, _like_prefix(f"{prefix}{old}/")),
                        )


def _like_prefix(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"


def prepare(uri: str) -> None:
    """Check a sqlite store and carry its artifact paths to its current folder; other stores are left alone."""
    database = database_path(uri)
    if database is None:
        return
    artifacts = database.parent / ARTIFACTS_DIR
    if not database.exists() or database.stat().st_size == 0:
        if artifacts.is_dir() and any(artifacts.iterdir()):
            raise StoreError(
                f"{database} is {'missing' if not database.exists() else 'empty'} but {artifacts} holds artifacts: "
                "the registry was lost or truncated; restore mlflow.db with its artifacts rather than start empty"
            )
        return
    with database.open("rb") as file:
        header = file.read(len(SQLITE_HEADER))
    if header != SQLITE_HEADER:
        raise _unreadable(database, "file is not a database")
    with contextlib.closing(sqlite3.connect(database, timeout=30)) as connection:
        _check(database, connection)
        _relocate(database, connection)
