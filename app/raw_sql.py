"""The rating flow's hot statements, compiled once per database dialect and run on the session's DB-API cursor.

Why: every vote runs 15-18 statements, and SQLAlchemy's execution (the compiled-cache lookup, the execution
context, the result's row objects) costs 29-37 µs per statement on SQLite where the bare cursor costs 7.8
(bench/vote_services.py); py-spy put 40% of the vote path's server CPU inside SQLAlchemy. These statements
are fixed (built once at import, bind parameters only), so everything SQLAlchemy decides per execution can be
decided once: the SQL string, the order of the parameters, and the type conversions of parameters and
result columns, which are taken from the same SQLAlchemy types (`bind_processor` / `result_processor`), so a
row reads exactly as ``session.execute`` would give it (a datetime on SQLite, JSON decoded, booleans).

What is kept: the statement runs in the session's own connection and transaction (``Session.connection``,
which begins it as ``execute`` would, with the app's SQLite ``BEGIN IMMEDIATE``); the engine's
``before_cursor_execute`` listeners are called (tests and bench/vote_services.py count statements with one);
DB-API errors are raised as SQLAlchemy's (``IntegrityError``, ``OperationalError``) through the connection's
own handler, which also invalidates a connection the database dropped. What is not: ORM autoflush (Core
statements through a session never autoflushed either), and statements with expanding ``IN`` parameters
(refused when compiled: their SQL depends on the parameters).
"""

from __future__ import annotations

from collections import namedtuple
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import Connection, Dialect
from sqlalchemy.orm import Session
from sqlalchemy.sql import Executable

Processor = Callable[[Any], Any]


class _Compiled:
    __slots__ = ("binds", "dialect", "make_row", "positional", "results", "sql", "types")

    def __init__(self, statement: Any, dialect: Dialect, columns: Sequence[str] | None) -> None:
        compiled = statement.compile(dialect=dialect, column_keys=columns)
        self.sql: str = compiled.string
        if "POSTCOMPILE" in self.sql:
            raise ValueError("raw_sql cannot run a statement with expanding IN parameters; use session.execute")
        if compiled.insert_prefetch or compiled.update_prefetch:
            # Column defaults computed in Python at execution (e.g. a timestamp's default) need SQLAlchemy's
            # execution context; the cursor would store NULL.
            raise ValueError("raw_sql cannot run a statement whose columns take Python-side defaults")
        by_name = {name: bind for bind, name in compiled.bind_names.items()}
        names = list(compiled.positiontup) if compiled.positional else list(by_name)
        self.positional: bool = bool(compiled.positional)
        # (name, converter or None, whether the caller must give it, the value bound at build time if not)
        self.binds: list[tuple[str, Processor | None, bool, Any]] = []
        for name in names:
            bind = by_name[name]
            required = bind.required or bind.callable is not None
            self.binds.append((name, bind.type.dialect_impl(dialect).bind_processor(dialect), required,
                               None if required else bind.value))
        # A SELECT's columns, or an INSERT's or UPDATE's RETURNING (none without).
        returned = list(statement.exported_columns)
        self.types = [c.type.dialect_impl(dialect) for c in returned]
        self.dialect = dialect
        # Filled at the first run: some converters depend on the type code the driver reports per column
        # (PostgreSQL's numeric types), as SQLAlchemy's own do.
        self.results: list[Processor | None] | None = None
        # Rows read by name as SQLAlchemy's do (``row.study_id``); a repeated name gets a positional one.
        fields = [getattr(c, "key", None) or f"_{i}" for i, c in enumerate(returned)]
        row_type: Any = namedtuple("Row", fields, rename=True)  # type: ignore[misc]  # fields known once compiled
        self.make_row: Callable[[Any], tuple] = row_type._make

    def parameters(self, given: Mapping[str, Any]) -> Sequence[Any] | dict[str, Any]:
        values = []
        for name, convert, required, default in self.binds:
            if name in given:
                value = given[name]
            elif required:  # as SQLAlchemy: a misspelt key must not become NULL (``WHERE id = NULL``)
                raise sa_exc.InvalidRequestError(f"A value is required for bind parameter {name!r}")
            else:
                value = default
            # Converters see None too, as SQLAlchemy's do: JSON stores None as JSON null, not SQL NULL.
            values.append(convert(value) if convert is not None else value)
        if self.positional:
            return tuple(values)
        return {b[0]: value for b, value in zip(self.binds, values, strict=True)}

    def convert(self, rows: list[tuple], description: Sequence[Any], *, named: bool = True) -> list[Any]:
        if self.results is None:
            self.results = [t.result_processor(self.dialect, d[1])
                            for t, d in zip(self.types, description, strict=True)]
        processors = self.results
        if not any(processors):
            return [self.make_row(row) for row in rows] if named else rows
        make = self.make_row if named else tuple
        return [make(p(v) if p is not None else v for p, v in zip(processors, row, strict=True)) for row in rows]


_CONNECTION = "raw_sql.connection"


def _connection(session: Session) -> Connection:
    """The session's connection in its current transaction. ``Session.connection`` walks the transaction's
    state machine on every call (a twentieth of a vote's CPU); within one transaction the answer is fixed, so
    it is kept in ``session.info`` beside the transaction it belongs to. Not inside ``begin_nested``: the
    SAVEPOINT is sent when the nested transaction first asks for its connection, so it must ask."""
    transaction = session.get_transaction()
    if transaction is not None and transaction.is_active and session.get_nested_transaction() is None:
        kept = session.info.get(_CONNECTION)
        if kept is not None and kept[0] is transaction:
            return kept[1]
    conn = session.connection()
    session.info[_CONNECTION] = (session.get_transaction(), conn)
    return conn


class RawStatement:
    """A Core statement run on the DB-API cursor of a session's connection (see the module's docstring)."""

    __slots__ = ("_by_dialect", "columns", "statement")

    def __init__(self, statement: Executable, *, columns: Sequence[str] | None = None) -> None:
        """``columns``: for ``insert(table)`` without ``values``, the columns every run gives (SQLAlchemy
        would decide them from each run's parameters); a column left out that has a Python-side default is
        refused when the statement is compiled."""
        self.statement = statement
        self.columns = list(columns) if columns is not None else None
        self._by_dialect: dict[int, _Compiled] = {}

    def _compiled(self, dialect: Dialect) -> _Compiled:
        found = self._by_dialect.get(id(dialect))
        if found is None:
            found = self._by_dialect[id(dialect)] = _Compiled(self.statement, dialect, self.columns)
        return found

    def _run(self, session: Session, params: Mapping[str, Any] | Sequence[Mapping[str, Any]],
             many: bool) -> tuple[Any, _Compiled]:
        conn = _connection(session)
        compiled = self._compiled(conn.dialect)
        if many:
            args: Any = [compiled.parameters(p) for p in params]  # type: ignore[arg-type]
        else:
            args = compiled.parameters(params)  # type: ignore[arg-type]
        cursor = None
        try:  # as SQLAlchemy's own execution: a cursor that cannot be had is a DB-API error too
            cursor = conn.connection.cursor()
            for listener in conn.dispatch.before_cursor_execute:
                listener(conn, cursor, compiled.sql, args, None, many)
            if many:
                cursor.executemany(compiled.sql, args)
            else:
                cursor.execute(compiled.sql, args)
        except BaseException as exc:
            # SQLAlchemy's handler wraps a DB-API error (IntegrityError, OperationalError...) and invalidates a
            # connection the database dropped, or one interrupted mid-statement; it re-raises anything else.
            conn._handle_dbapi_exception(exc, compiled.sql, args, cursor, None)  # noqa: SLF001
            raise  # not reached: the handler raises
        return cursor, compiled

    def all(self, session: Session, params: Mapping[str, Any] | None = None, *, named: bool = True) -> list[Any]:
        """The rows, read by name as SQLAlchemy's are; ``named=False``: plain tuples, for bulk reads (a study's
        every answer) where building a named row per answer would cost more than reading it."""
        cursor, compiled = self._run(session, params or {}, False)
        try:
            return compiled.convert(cursor.fetchall(), cursor.description, named=named)
        finally:
            cursor.close()

    def one_or_none(self, session: Session, params: Mapping[str, Any] | None = None) -> Any:
        rows = self.all(session, params)
        if len(rows) > 1:
            raise sa_exc.MultipleResultsFound(f"Multiple rows were found when one or none was required ({len(rows)})")
        return rows[0] if rows else None

    def one(self, session: Session, params: Mapping[str, Any] | None = None) -> Any:
        row = self.one_or_none(session, params)
        if row is None:
            raise sa_exc.NoResultFound("No row was found when one was required")
        return row

    def scalar(self, session: Session, params: Mapping[str, Any] | None = None) -> Any:
        rows = self.all(session, params)
        return rows[0][0] if rows else None

    def scalars(self, session: Session, params: Mapping[str, Any] | None = None) -> list[Any]:
        return [row[0] for row in self.all(session, params)]

    def run(self, session: Session, params: Mapping[str, Any] | Sequence[Mapping[str, Any]] | None = None) -> int:
        """A write (or several: a list of parameter sets runs ``executemany``); returns the rows it changed."""
        many = isinstance(params, list | tuple)
        cursor, _compiled = self._run(session, params or {}, many)
        try:
            return cursor.rowcount
        finally:
            cursor.close()
