"""All-or-nothing table refresh: COPY into a staging table, then swap it in.

Everything happens in one transaction. The staging table is created without indexes,
filled with COPY, indexed, and finally renamed over the live table; the live table
is only locked for the final DROP + RENAME, a few milliseconds. If anything fails
(or the worker is killed), the transaction rolls back and readers keep seeing the
previous data, whole. Index and constraint names are restored after the swap, so
re-applying schema.sql never creates duplicates.
"""
from __future__ import annotations

import io
from typing import Iterable

from psycopg2 import sql

SUFFIX = "_stg"


def _indexes(cur, table: str):
    """(index name, DDL to build it on the staging table, backs a constraint?) per index."""
    cur.execute(
        """
        SELECT i.relname, pg_get_indexdef(i.oid), c.conname, pg_get_constraintdef(c.oid)
        FROM pg_index x
        JOIN pg_class i ON i.oid = x.indexrelid
        JOIN pg_class t ON t.oid = x.indrelid
        LEFT JOIN pg_constraint c ON c.conindid = i.oid AND c.contype IN ('p', 'u')
        WHERE t.relname = %s AND t.relnamespace = 'public'::regnamespace
        ORDER BY i.relname
        """,
        (table,),
    )
    return cur.fetchall()


def copy_csv(cur, table: str, columns: list[str], chunks: Iterable[io.StringIO], on_chunk=None) -> int:
    """COPY CSV chunks (workers.pipeline.frame_chunks) into a table; returns the rows copied.
    on_chunk(rows) is called after each chunk."""
    copy = sql.SQL("COPY {} ({}) FROM STDIN WITH (FORMAT csv)").format(
        sql.Identifier(table), sql.SQL(", ").join(map(sql.Identifier, columns))).as_string(cur)
    rows = 0
    for chunk in chunks:
        n = chunk.getvalue().count("\n")
        chunk.seek(0)
        cur.copy_expert(copy, chunk)
        rows += n
        if on_chunk:
            on_chunk(n)
    return rows


def replace_tables(conn, tables: dict[str, tuple[list[str], Iterable[io.StringIO]]], progress=None,
                   before_commit=None) -> int:
    """Replace each table's contents with the CSV chunks given for it, atomically.

    tables: {table: (columns, iterable of CSV text buffers)}. Returns rows written.
    The caller's connection must not be in autocommit mode; this commits on success
    and rolls back on any error. before_commit() may raise to refuse the swap at the
    last moment (a job that lost its lease).
    """
    rows = 0
    try:
        with conn.cursor() as cur:
            cur.execute("SET LOCAL lock_timeout = '30s'")
            plans = {}
            for table, (columns, chunks) in tables.items():
                staging = table + "_staging"
                cur.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(sql.Identifier(staging)))
                cur.execute(
                    sql.SQL("CREATE TABLE {} (LIKE {} INCLUDING DEFAULTS INCLUDING CONSTRAINTS)").format(
                        sql.Identifier(staging), sql.Identifier(table)
                    )
                )
                rows += copy_csv(cur, staging, columns, chunks,
                                 (lambda n, table=table: progress(table, n)) if progress else None)
                indexes = _indexes(cur, table)
                for name, indexdef, conname, condef in indexes:
                    if conname:
                        cur.execute(
                            sql.SQL("ALTER TABLE {} ADD CONSTRAINT {} " + condef).format(
                                sql.Identifier(staging), sql.Identifier(name + SUFFIX)
                            )
                        )
                    else:
                        head = f" INDEX {name} ON public.{table} "
                        if head not in indexdef:
                            raise RuntimeError(f"unexpected index definition for {name}: {indexdef}")
                        cur.execute(indexdef.replace(head, f" INDEX {name}{SUFFIX} ON public.{staging} ", 1))
                plans[table] = (staging, [name for name, *_ in indexes])
            for table, (staging, names) in plans.items():
                cur.execute(sql.SQL("DROP TABLE {}").format(sql.Identifier(table)))
                cur.execute(sql.SQL("ALTER TABLE {} RENAME TO {}").format(sql.Identifier(staging), sql.Identifier(table)))
                for name in names:
                    cur.execute(
                        sql.SQL("ALTER INDEX {} RENAME TO {}").format(sql.Identifier(name + SUFFIX), sql.Identifier(name))
                    )
                cur.execute(sql.SQL("ANALYZE {}").format(sql.Identifier(table)))
        if before_commit is not None:
            before_commit()
        conn.commit()
    except BaseException:
        conn.rollback()
        raise
    return rows
