"""The results-store interface, and opening a store from a database option.

Two backends keep the same tables and rows: SQLite (``pipeline.outputs.store``, the embedded default, one file)
and PostgreSQL (``pipeline.outputs.store_pg``, psycopg 3, for several processes or machines writing one
database). Callers never import a backend: they open a store with :func:`open_store` and use the
methods of :class:`ResultsStore`.

A database option is either a file path (SQLite; batch resolves a relative one inside ``--out``) or a
PostgreSQL URL, ``postgresql://user[:password]@host[:port]/dbname`` (``postgres://`` also accepted).
Each backend applies its versioned migrations when opened; both have the same number of steps, so a
schema version means the same layout on either. The statements both run are written once, in
:class:`pipeline.outputs.store_sql.SqlStore`; a backend supplies its connection, transactions and dialect (placeholders, the
``saved_seq`` counter, what its text type cannot hold).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Protocol, runtime_checkable

_PG_SCHEMES = ("postgresql://", "postgres://")


@runtime_checkable
class ResultsStore(Protocol):
    """What batch, the engine (agent shifts) and the live service need from a results database.
    Every method is safe to call from any thread of one process."""

    @property
    def path(self) -> str:
        """Where the database is (a file path, or the URL without its password)."""

    def save_call(self, result: Mapping) -> None:
        """Insert or replace one call, its segments and alerts (idempotent on ``call_id``)."""

    def get_call(self, call_id: str) -> dict | None:
        """The stored per-call JSON, or None."""

    def list_calls(self, *, limit: int = 100) -> list[dict]:
        """Summary rows of the most recently stored calls, newest first."""

    def list_alerts(self, *, since_id: int = 0, limit: int = 500) -> list[dict]:
        """Alerts with a cursor above ``since_id``, oldest first."""

    def load_shift(self, agent_id: str) -> dict | None:
        """An agent's saved shift state, or None."""

    def save_shift(self, agent_id: str, state: Mapping) -> None:
        """Replace an agent's saved shift state."""

    def list_shift_agents(self) -> list[str]:
        """Every agent with a saved shift (the live strain board after a restart)."""

    def shift_book(self, options: Any) -> Any:
        """The engine's ``ShiftBook`` on this database (SQLite: cached, written through; PostgreSQL:
        read through, updated atomically across workers)."""

    def save_checkpoint(self, call_id: str, result: Mapping, *, shift: Mapping | None = None) -> None:
        """Live: insert or replace a call-in-progress's partial result (crash recovery)."""

    def list_checkpoints(self) -> list[dict]:
        """Live: every checkpoint left, oldest first."""

    def drop_checkpoint(self, call_id: str) -> None:
        """Live: delete a call's checkpoint once its final result is stored (idempotent)."""

    def call_exists(self, call_id: str) -> bool:
        """Whether ``call_id`` is a stored call or a live call's checkpoint."""

    def close(self) -> None:
        """Close (idempotent)."""


def is_postgres_url(target: str | Path | None) -> bool:
    return isinstance(target, str) and target.strip().lower().startswith(_PG_SCHEMES)


def resolve_database(target: str | None, *, folder: Path) -> str | None:
    """The database a batch run writes: a URL as given, a relative file inside ``folder``; ""/None = none."""
    if not target:
        return None
    if is_postgres_url(target):
        return target.strip()
    path = Path(target).expanduser()
    return str(path if path.is_absolute() else folder / path)


def open_store(target: str | Path) -> ResultsStore:
    """Open (creating and migrating as needed) the store at a file path or a PostgreSQL URL.

    Raises StoreError with what to do when the database cannot be opened or is from a newer callpulse.
    """
    if is_postgres_url(target):
        from .store_pg import PgStore

        return PgStore.open(str(target).strip())
    from .store import Store

    return Store.open(target)
