"""Session logs on PostgreSQL: the ``turns`` of a session and the JSON kept beside them.

A part of :class:`~contextos.store.postgres.PostgresStore`, split out because a
session log is its own concept (an append-only, numbered message log) that shares
only the connection pool with the memory records.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from contextlib import AbstractContextManager
from datetime import UTC, datetime
from typing import Any, cast

from contextos.store.postgres.codec import TURN_COLUMNS, turn_from_row, turn_params
from contextos.store.records import (
    REVISION_KEY,
    TURN_FIELDS,
    MetaSQL,
    append_turn_rows,
    check_turns,
    fresh_meta_json,
    list_sessions,
    read_session_meta,
    refuse_nul_in_scope,
    swap_session_meta_row,
    turns_since,
    within_bytes,
)
from contextos.types import Message, Scope, Turn

#: How PostgreSQL writes the session-meta statements (``records.MetaSQL``).
META_SQL = MetaSQL(
    mark="%s",
    json_cast="::jsonb",
    same_revision=f"meta->>'{REVISION_KEY}' IS NOT DISTINCT FROM %s::text",
    in_sessions="= ANY(%s)",
    decode=dict,
    revision=f"meta->>'{REVISION_KEY}'",
)

Transaction = Callable[[str], AbstractContextManager[Any]]
Reader = Callable[[str, Sequence[object]], "list[Any]"]


def _now() -> datetime:
    return datetime.now(UTC)


def _session_key(tenant: str, session_id: str) -> int:
    """The advisory-lock key of one session's log: 64 bits of a digest of its names (two
    sessions sharing one only wait for each other)."""
    name = json.dumps(["session log", tenant, session_id]).encode()
    return int.from_bytes(hashlib.blake2b(name, digest_size=8).digest(), "big", signed=True)


def lock_sessions(cur: Any, tenant: str, session_ids: Iterable[str]) -> None:
    """Take the transaction locks of these sessions' logs, in the order of their keys.

    An append takes its session's lock before it writes (:meth:`PgSessionLog.append_turns`)
    and ``forget`` takes every session's it erases before it deletes: an append under
    way commits before the erasure reads the log, and one after waits, then finds the
    turn it follows gone (``after=``). Row locks on ``session_meta`` could not do it: a
    ``forget`` of the other user of a shared session deletes that row and inserts it
    again, and a lock waiting on the old row then got nothing (an append slipped past,
    and two erasures deadlocked). In key order, so two erasures never wait on each other
    in a cycle.
    """
    keys = sorted({_session_key(tenant, s) for s in session_ids})
    if keys:
        cur.execute(
            "SELECT pg_advisory_xact_lock(k) FROM unnest(%s::bigint[]) WITH ORDINALITY "
            "AS u(k, n) ORDER BY n",
            (keys,),
        )


class PgSessionLog:
    """The session-log half of the Store protocol, over a store's transactions."""

    def __init__(self, tx: Transaction, read: Reader) -> None:
        self._tx = tx
        self._read = read

    def append_turns(
        self,
        scope: Scope,
        messages: Sequence[Message],
        tokens: Sequence[int],
        *,
        after: Turn | None = None,
        newest: int | None = None,
    ) -> list[Turn]:
        check_turns(scope, messages, tokens)
        now = datetime.now(UTC)
        with self._tx("append") as cur:
            lock_sessions(cur, scope.tenant, [str(scope.session_id)])
            rows = append_turn_rows(
                cur,
                scope,
                messages,
                tokens,
                now,
                mark="%s",
                row_of=turn_params,
                json_cast="::jsonb",
                after=after,
                turn_of=turn_from_row,
                newest=newest,
            )
        seq = TURN_FIELDS.index("seq")  # the rows hold jsonb text: build the turns, not decode
        return [
            Turn(
                session_id=str(scope.session_id),
                seq=cast(int, r[seq]),
                message=m,
                tokens=t,
                created_at=now,
                user_id=scope.user_id,
                agent_id=scope.agent_id,
            )
            for r, m, t in zip(rows, messages, tokens, strict=True)
        ]

    def turns(
        self,
        scope: Scope,
        *,
        after_seq: int = -1,
        limit: int | None = None,
        newest: bool = False,
        max_bytes: int | None = None,
        settled: bool = False,
    ) -> list[Turn]:
        where = "tenant = %s AND session_id = %s AND seq > %s"
        order = f"ORDER BY seq {'DESC' if newest else ''}"
        args = (scope.tenant, scope.session_id, after_seq, limit)
        if settled:
            if max_bytes is not None:
                raise ValueError("a settled read of the log takes no max_bytes")
            # The log's lock, shared, then the read in the same transaction: its snapshot
            # is taken after an append or erasure holding the lock has committed (one
            # statement would have taken it before the wait).
            with self._tx("read") as cur:
                key = _session_key(scope.tenant, str(scope.session_id))
                cur.execute("SELECT pg_advisory_xact_lock_shared(%s)", (key,))
                query = f"SELECT {TURN_COLUMNS} FROM turns WHERE {where} {order} LIMIT %s"
                turns = [turn_from_row(r) for r in cur.execute(query, args).fetchall()]
            return turns[::-1] if newest else turns
        if max_bytes is None:
            rows = self._read(
                f"SELECT {TURN_COLUMNS} FROM turns WHERE {where} {order} LIMIT %s", args
            )
        else:
            sized = self._read(
                "SELECT seq, octet_length(content) + octet_length(tool_calls::text) "
                f"+ octet_length(metadata::text) FROM turns WHERE {where} {order} LIMIT %s",
                args,
            )
            rows = self._read(
                f"SELECT {TURN_COLUMNS} FROM turns WHERE tenant = %s AND session_id = %s "
                f"AND seq = ANY(%s) {order}",
                (scope.tenant, scope.session_id, within_bytes(sized, max_bytes)),
            )
        turns = [turn_from_row(r) for r in rows]
        return turns[::-1] if newest else turns

    def turn_texts(
        self, scope: Scope, *, after_seq: int = -1, limit: int | None = None
    ) -> list[tuple[int, str, str]]:
        return self._read(
            "SELECT seq, role, content FROM turns WHERE tenant = %s AND session_id = %s "
            "AND seq > %s ORDER BY seq LIMIT %s",
            (scope.tenant, scope.session_id, after_seq, limit),
        )

    def turns_since(self, scope: Scope, last: Turn, *, revision: str | None) -> list[Turn] | None:
        return turns_since(self._read, scope, last, revision, sql=META_SQL, turn_of=turn_from_row)

    def set_session_meta(self, scope: Scope, meta: Mapping[str, Any]) -> None:
        refuse_nul_in_scope(scope)  # a write: named, not the driver's refusal
        body = fresh_meta_json(meta)
        with self._tx("write") as cur:
            cur.execute(
                "INSERT INTO session_meta (tenant, session_id, user_id, agent_id, meta, "
                "updated_at) VALUES (%s,%s,%s,%s,%s::jsonb,%s) ON CONFLICT (tenant, session_id) "
                "DO UPDATE SET meta = excluded.meta, updated_at = excluded.updated_at",
                (scope.tenant, scope.session_id, scope.user_id, scope.agent_id, body, _now()),
            )

    def swap_session_meta(
        self, scope: Scope, meta: Mapping[str, Any], *, revision: str | None
    ) -> bool:
        with self._tx("write") as cur:
            return swap_session_meta_row(cur, scope, meta, _now(), revision=revision, sql=META_SQL)

    def session_meta(self, scope: Scope) -> dict[str, Any]:
        return self.session_meta_revision(scope)[0]

    def session_meta_revision(self, scope: Scope) -> tuple[dict[str, Any], str | None]:
        return read_session_meta(self._read, scope, META_SQL)

    def sessions(self, scope: Scope) -> list[str]:
        return list_sessions(self._read, scope, mark="%s")
