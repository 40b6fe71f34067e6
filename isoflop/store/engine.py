"""Opening the store: SQLite in WAL mode by default, any SQLAlchemy URL otherwise."""
from __future__ import annotations

import os
from pathlib import Path

from sqlalchemy import create_engine, event, inspect, select
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker

from .models import SCHEMA_VERSION, Base, Meta

DEFAULT_WORKDIR = "isoflop-work"


class StoreError(RuntimeError):
    pass


def workdir_path(workdir: str | Path | None = None) -> Path:
    return Path(workdir or os.environ.get("ISOFLOP_WORKDIR") or DEFAULT_WORKDIR).resolve()


def db_url(db: str | None, workdir: str | Path | None = None) -> str:
    url = db or os.environ.get("ISOFLOP_DB")
    if url:
        return url if "://" in url else f"sqlite:///{Path(url).resolve()}"
    return f"sqlite:///{workdir_path(workdir) / 'isoflop.db'}"


def _sqlite_pragmas(dbapi_conn, _record) -> None:
    cur = dbapi_conn.cursor()
    # WAL: readers (status --watch) never block the one writer; NORMAL sync is safe under WAL
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute("PRAGMA busy_timeout=30000")
    cur.close()


def open_engine(url: str, *, create: bool = True) -> Engine:
    """An engine on a store whose schema version is checked (and created when `create`)."""
    if url.startswith("sqlite:///"):
        path = Path(url.removeprefix("sqlite:///"))
        if not create and not path.exists():
            raise StoreError(f"no store at {path}: run `isoflop plan SPEC` first, or pass --db/--workdir")
        path.parent.mkdir(parents=True, exist_ok=True)
    try:
        engine = create_engine(url)
    except Exception as e:  # a malformed URL or a missing driver
        raise StoreError(f"cannot open store {url!r}: {e}") from None
    if engine.dialect.name == "sqlite":
        event.listen(engine, "connect", _sqlite_pragmas)
    try:
        has_meta = inspect(engine).has_table("meta")
    except Exception as e:
        raise StoreError(f"cannot open store {url!r}: {e.__class__.__name__}: {e}".splitlines()[0]) from None
    if not has_meta:
        if not create:
            raise StoreError(f"store {url!r} has no isoflop tables: run `isoflop plan SPEC` first")
        Base.metadata.create_all(engine)
        with Session(engine) as s, s.begin():
            s.merge(Meta(key="schema_version", value=str(SCHEMA_VERSION)))
        return engine
    with Session(engine) as s:
        v = s.scalar(select(Meta.value).where(Meta.key == "schema_version"))
    if v != str(SCHEMA_VERSION):
        raise StoreError(
            f"store {url!r} has schema version {v}, this isoflop expects {SCHEMA_VERSION}; "
            "use the isoflop version that wrote it"
        )
    return engine


def session_factory(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(engine, expire_on_commit=False)
