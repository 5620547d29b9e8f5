"""An offload that archives turns while a ``forget`` of them is committing leaves no
copy of the erased text (PostgreSQL).

Why (a review of the session routes, 3 of 9 runs): the forget deleted the memories,
then the offload's archive added copies of the turns, and its check for erased turns
read the log before the forget committed: it found the turns, kept the copies, and
after ``forget`` answered, search still found the user's erased words. The check now
reads the log once any write of it under way has committed (``Store.turns(...,
settled=True)``).

The forget is held open by a trigger the test adds to its own schema's ``turns``
table (a real PostgreSQL, nothing of contextos patched), so the offload always runs
inside it.
"""

from __future__ import annotations

import threading
import time

from contextos import Memory
from contextos.engine.session import Session
from contextos.store.postgres import PostgresStore
from contextos.testing.embedders import HashEmbedder
from contextos.types import Message
from pg_support import connect, fresh_schema

HOLD_S = 1.5  # the forget's transaction stays open this long after deleting the turns


def test_an_offload_inside_a_forget_keeps_no_copy_of_the_erased_turns() -> None:
    with fresh_schema("offforget") as (url, schema):
        store = PostgresStore(url)
        memory = Memory(store=store, embedder=HashEmbedder(), background_embedding=False)
        try:
            session = Session(store, "chat", user_id="ana")
            for i in range(40):
                session.add(
                    Message("user", f"ana-said-{i} secret plan number {i}"),
                    Message("assistant", f"reply-{i}"),
                )
            with connect(url, schema) as conn:
                conn.execute(
                    "CREATE FUNCTION hold() RETURNS trigger AS $$ BEGIN "
                    f"PERFORM pg_sleep({HOLD_S}); RETURN NULL; END $$ LANGUAGE plpgsql"
                )
                conn.execute(
                    "CREATE TRIGGER hold AFTER DELETE ON turns "
                    "FOR EACH STATEMENT EXECUTE FUNCTION hold()"
                )
            errors: list[BaseException] = []

            def forget() -> None:
                try:
                    memory.forget(user_id="ana")
                except BaseException as exc:  # noqa: BLE001 - reported below
                    errors.append(exc)

            eraser = threading.Thread(target=forget)
            eraser.start()
            time.sleep(HOLD_S / 3)  # the forget deleted memories and turns, and waits
            offloader = Session(store, "chat", user_id="ana")
            offloader.compact(300, "offload", memory=memory, force=True)
            eraser.join()
            assert not errors, errors
            left = [r.text for r in memory.get_all(user_id="ana", limit=1000)]
            assert not [t for t in left if "secret plan" in t], left[:5]
            assert Session(store, "chat", user_id="ana").turns() == []
        finally:
            memory.close()
