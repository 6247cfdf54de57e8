"""Setting up a new sqlite MLflow store safely: one process at a time, all or nothing.

MLflow creates the schema of a sqlite store on first use by running its migrations in place. Two
processes doing that at once on the same new file fail (``duplicate column name``, ``table
alembic_version already exists``), and a disk that fills half-way leaves a database with part of
the schema that MLflow then refuses for good.

``ensure_sqlite_store(uri)`` does the set-up for a ``sqlite:///`` URI whose file does not exist
yet (or is empty): under an exclusive ``fcntl.flock`` on the database's folder, it builds the whole
schema in a temporary file beside it and then links that file into place, so the database either
appears complete or not at all. Other processes wait on the lock and then find the store ready.
An existing store is left alone (one ``stat``; no lock, no mlflow import).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import time
from collections.abc import Iterator
from pathlib import Path

from gpuops.errors import ExternalError, UsageError

LOCK_TIMEOUT = 300.0  # seconds to wait for another process's set-up


def sqlite_file(uri: str) -> Path | None:
    """The database file of a ``sqlite:///`` URI (None for other stores and in-memory ones)."""
    prefix = "sqlite:///"
    if not uri.startswith(prefix):
        return None
    rest = uri[len(prefix):].split("?", 1)[0]
    if not rest or rest == ":memory:":
        return None
    return Path(rest).expanduser().absolute()


def _ready(db: Path) -> bool:
    try:
        return db.stat().st_size > 0
    except OSError:
        return False


@contextlib.contextmanager
def _folder_lock(folder: Path, timeout: float = LOCK_TIMEOUT) -> Iterator[None]:
    """An exclusive ``flock`` on the folder itself (no lock file is left behind)."""
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise ExternalError(f"{folder}: another process has been setting up the MLflow "
                                        f"store for over {timeout:.0f} s") from None
                time.sleep(0.05)
        yield
    finally:
        os.close(fd)  # closing the descriptor releases the lock


def _disk_full(exc: BaseException, folder: Path | None = None) -> bool:
    if folder is not None:
        try:
            st = os.statvfs(folder)
            if st.f_bavail * st.f_frsize < 1024 * 1024:  # under 1 MiB left: whatever sqlite said
                return True
        except OSError:
            pass
    seen: set[int] = set()
    e: BaseException | None = exc
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
            return True
        text = str(e).lower()
        if "disk is full" in text or "no space left" in text or "file too large" in text:
            return True
        e = e.__cause__ or e.__context__
    return False


def _remove(*paths: Path) -> None:
    for p in paths:
        with contextlib.suppress(OSError):
            p.unlink()


def _build(tmp: Path, artifact_root: str) -> None:
    """The whole MLflow schema and its Default experiment, in ``tmp``; every connection closed."""
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

    uri = f"sqlite:///{tmp}"
    try:
        store = SqlAlchemyStore(uri, artifact_root)
        store.get_experiment(str(SqlAlchemyStore.DEFAULT_EXPERIMENT_ID))
    finally:  # MLflow caches one engine per URI: drop it, with its connections, success or not
        engine = getattr(SqlAlchemyStore, "_engine_map", {}).pop(uri, None)
        if engine is not None:
            engine.dispose()


def ensure_sqlite_store(uri: str) -> Path | None:
    """Make sure the sqlite store of ``uri`` exists with its whole schema; its path (None: not sqlite).

    Raises ``ExternalError`` (one line) when the set-up fails, e.g. on a full disk, leaving no
    database file behind."""
    db = sqlite_file(uri)
    if db is None or _ready(db):
        return db
    try:
        db.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UsageError(f"cannot create the folder of the MLflow store {db.parent}: "
                         f"{e.strerror or e}") from None
    with _folder_lock(db.parent):
        if _ready(db):  # another process made it while this one waited
            return db
        tmp = db.with_name(f".{db.name}.setup-{os.getpid()}-{os.urandom(4).hex()}")
        side = [tmp.with_name(tmp.name + s) for s in ("-journal", "-wal", "-shm")]
        _remove(tmp, *side)
        # MLflow's own default artifact root for a local store: ./mlruns of the working directory.
        artifact_root = (Path.cwd() / "mlruns").absolute().as_uri()
        try:
            _build(tmp, artifact_root)
            if db.exists():  # an empty file someone created: replace it
                os.replace(tmp, db)
            else:
                os.link(tmp, db)  # fails rather than overwrite a store made by a non-gpuops process
        except FileExistsError:
            pass  # made meanwhile by something that does not take the lock; use it
        except BaseException as e:
            _remove(tmp, *side)
            if _disk_full(e, db.parent):
                raise ExternalError(f"the disk holding {db} is full: the MLflow store could not be set up "
                                    "(nothing was left behind; free some space and run again)") from None
            if isinstance(e, Exception):
                first = (str(e).strip().splitlines() or [type(e).__name__])[0][:300]
                raise ExternalError(f"could not set up the MLflow store {db}: {first}") from None
            raise
        finally:
            _remove(tmp, *side)
    return db
