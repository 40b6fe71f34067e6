"""Opening the store: SQLite in WAL mode by default, any SQLAlchemy URL otherwise (PostgreSQL
for a team: `postgresql+psycopg://user@host/db`, or `postgresql://`, which means psycopg 3 here).

A SQLite store in a folder this process cannot write (a read-only mount, another user's
results) is opened read-only: WAL needs to create its -wal/-shm files beside the store, so a
normal open would fail even for reading. Commands that change the store refuse it in one line.
"""
from __future__ import annotations

import contextlib
import os
import re
import sqlite3
import weakref
from pathlib import Path
from typing import Iterator
from urllib.parse import quote

from sqlalchemy import create_engine, event, inspect, select
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.orm import Session, sessionmaker

from ..errors import UserError
from .models import SCHEMA_VERSION, Base, Meta

DEFAULT_WORKDIR = "isoflop-work"


class StoreError(UserError, RuntimeError):
    """A store that cannot be opened or used as asked; one line naming it."""


def workdir_path(workdir: str | Path | None = None) -> Path:
    return Path(workdir or os.environ.get("ISOFLOP_WORKDIR") or DEFAULT_WORKDIR).resolve()


def db_url(db: str | None, workdir: str | Path | None = None) -> str:
    url = db or os.environ.get("ISOFLOP_DB")
    if url:
        if url.startswith(("postgresql://", "postgres://")):
            # SQLAlchemy's default PostgreSQL driver is psycopg2; the postgres extra ships psycopg 3
            url = "postgresql+psycopg://" + url.split("://", 1)[1]
        return url if "://" in url else f"sqlite:///{Path(url).resolve()}"
    return f"sqlite:///{workdir_path(workdir) / 'isoflop.db'}"


def shown(url: str) -> str:
    """The URL as messages show it: without its password."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return re.sub(r"://([^:/@]*):[^@/]*@", r"://\1:***@", url)


def _sqlite_read_only_pragmas(dbapi_conn, _record) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA query_only=ON")
    cur.close()


def _writable(path: Path) -> bool:
    folder_ok = os.access(path.parent, os.W_OK | os.X_OK)
    return folder_ok and (not path.exists() or os.access(path, os.W_OK))


_READ_ONLY: "weakref.WeakSet[Engine]" = weakref.WeakSet()


def is_read_only(engine: Engine) -> bool:
    """Whether open_engine opened this store read-only (its folder is not writable)."""
    return engine in _READ_ONLY


def _read_only_engine(path: Path) -> Engine:
    # a SQLite URI, percent-encoded so that '#', '?' or '%' in a path stay part of it;
    # immutable: no -shm/-wal files (the folder cannot hold them) and no locks
    uri = f"file:{quote(str(path), safe='/')}?mode=ro&immutable=1"
    engine = create_engine("sqlite://", creator=lambda: sqlite3.connect(uri, uri=True, check_same_thread=False))
    _READ_ONLY.add(engine)
    return engine


def _sqlite_pragmas(dbapi_conn, _record) -> None:
    cur = dbapi_conn.cursor()
    # WAL: readers (status --watch) never block the one writer; NORMAL sync is safe under WAL
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute("PRAGMA busy_timeout=30000")
    cur.close()


# SQLite errors that the user's disk or folder causes (not isoflop): one line, not pages of SQL
_SQLITE_USER_ERRORS = ("database or disk is full", "attempt to write a readonly database",
                       "unable to open database file", "disk I/O error", "database is locked")


def _user_facing(store: str):
    def handle_error(ctx) -> StoreError | None:
        msg = str(ctx.original_exception)
        if any(msg.startswith(m) for m in _SQLITE_USER_ERRORS):
            return StoreError(f"store {store}: {msg}")
        return None

    return handle_error


def _server_errors(store: str):
    """A server's connection-level failures (down, restarted, unreachable, refused credentials):
    one line naming the store, wherever in a command they happen. SQL errors keep their traceback."""

    def handle_error(ctx) -> StoreError | None:
        if ctx.is_disconnect or ctx.sqlalchemy_exception.__class__.__name__ == "OperationalError":
            first = (str(ctx.original_exception).strip().splitlines() or ["connection failed"])[0]
            return StoreError(f"store {store}: {first}")
        return None

    return handle_error


def _missing_driver(url: str, e: BaseException) -> StoreError:
    if isinstance(e, ModuleNotFoundError) and url.startswith("postgresql"):
        return StoreError(f"store {shown(url)}: the PostgreSQL driver is not installed ({e}); "
                          "pip install 'isoflop[postgres]'")
    return StoreError(f"cannot open store {shown(url)!r}: {e}")


def open_engine(url: str, *, create: bool = True, write: bool = True) -> Engine:
    """An engine on a store whose schema version is checked (and created when `create`).

    write=False: the caller only reads, so a SQLite store in a folder it cannot write is
    opened read-only (immutable) instead of refused."""
    read_only = False
    if url.startswith("sqlite:///"):
        path = Path(url.removeprefix("sqlite:///"))
        if path.is_dir():
            raise StoreError(f"{path}: is a folder, not a store file")
        if not create and not path.exists():
            raise StoreError(f"no store at {path}: run `isoflop plan SPEC` first, or pass --db/--workdir")
        blocker = next((d for d in path.parents if d.exists()), None)
        if blocker is not None and not blocker.is_dir():
            raise StoreError(f"{blocker}: is a file, not a folder (the store would be {path})")
        path.parent.mkdir(parents=True, exist_ok=True)
        if not _writable(path):
            if write or create and not path.exists():
                raise StoreError(f"{path.parent}: read-only folder; the store {path.name} there can be read "
                                 "(status, fit) but not created or changed")
            read_only = True
    try:
        engine = _read_only_engine(path) if read_only else create_engine(url, **_engine_options(url))
    except Exception as e:  # a malformed URL or a missing driver
        raise _missing_driver(url, e) from None
    if engine.dialect.name == "sqlite":
        event.listen(engine, "connect", _sqlite_read_only_pragmas if read_only else _sqlite_pragmas)
        event.listen(engine, "handle_error", _user_facing(url.removeprefix("sqlite:///")))
    else:
        event.listen(engine, "handle_error", _server_errors(shown(url)))
    url = shown(url)  # from here on the URL is only shown
    try:
        has_meta = inspect(engine).has_table("meta")
    except StoreError:
        raise  # a server that is down or refuses us: already one line naming the store
    except Exception as e:
        raise StoreError(f"cannot open store {url!r}: {e.__class__.__name__}: {e}".splitlines()[0]) from None
    if not has_meta:
        if not create or read_only:
            raise StoreError(f"store {url!r} has no isoflop tables: run `isoflop plan SPEC` first")
        _create_schema(engine)
        return engine
    with Session(engine) as s:
        v = s.scalar(select(Meta.value).where(Meta.key == "schema_version"))
    if v != str(SCHEMA_VERSION):
        raise StoreError(
            f"store {url!r} has schema version {v}, this isoflop expects {SCHEMA_VERSION}; "
            "use the isoflop version that wrote it"
        )
    return engine


def _engine_options(url: str) -> dict:
    if url.startswith("postgresql"):
        # a dropped connection (server restart, idle timeout on a team server) is replaced, not
        # reported; the connect timeout makes a server that does not answer one line, not a hang
        return {"pool_pre_ping": True, "connect_args": {"connect_timeout": 10}}
    return {}


def _create_schema(engine: Engine) -> None:
    """Tables and the schema version, in one transaction. On a server two commands may create
    the same store at once: the loser waits on the advisory lock and finds the tables there."""
    with engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            conn.exec_driver_sql("SELECT pg_advisory_xact_lock(7160120)")  # any fixed key: 'isoflop schema'
        Base.metadata.create_all(conn)
        with Session(conn) as s:
            s.merge(Meta(key="schema_version", value=str(SCHEMA_VERSION)))
            s.flush()


def lock_sweep(session: Session, sweep_id: int) -> None:
    """Hold the sweep's row until this transaction ends: on a server, two commands that sync the
    same sweep at once (status in two shells) take turns, as SQLite's one writer does by itself;
    otherwise both would ingest the same new metrics lines. SQLite has no row locks: a no-op."""
    if session.get_bind().dialect.name != "sqlite":
        from .models import Sweep

        session.execute(select(Sweep.id).where(Sweep.id == sweep_id).with_for_update())


@contextlib.contextmanager
def removed_on_error(url: str) -> Iterator[None]:
    """A SQLite store (and folders) that this block creates is removed again when it fails:
    a failed `plan` leaves nothing behind."""
    if not url.startswith("sqlite:///"):
        yield
        return
    path = Path(url.removeprefix("sqlite:///"))
    if path.exists():
        yield
        return
    missing = [d for d in (path.parent, *path.parent.parents) if not d.exists()]
    try:
        yield
    except BaseException:
        for p in (path, Path(f"{path}-wal"), Path(f"{path}-shm"), Path(f"{path}-journal")):
            with contextlib.suppress(OSError):
                p.unlink()
        for d in missing:  # deepest first; only the empty folders this block made
            with contextlib.suppress(OSError):
                d.rmdir()
        raise


def session_factory(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(engine, expire_on_commit=False)
