"""Self-editing core memory (MemGPT/Letta style): labeled blocks the model rewrites.

A block (``persona``, ``human``, ...) is one procedural memory in the scope
given at construction, with a size limit in characters; its text is a header
line naming the label, then the value, so it is searchable like any memory and
each edit is an UPDATE in ``Memory.history``.

The blocks are pinned in the window's cached prefix (the ``rules`` of
:meth:`contextos.engine.session.Session.window`, or a system block of a wrapped
call). Re-rendering them on every edit would change the prefix bytes and
throw away the cache of everything after them, every time the model edits.
So :class:`CorePrefix` keeps a *snapshot*: the prefix shows the blocks as they
were at the last compaction point and is re-rendered only when the session's
compaction state moves on (the prefix is rebuilt then anyway). Until then an
edit reaches the model as what it already is in the history -- the tool call
and its result, which quote the block's new value -- an append after the
cached prefix. ``refresh_after`` bounds how many edits may wait. A block
erased meanwhile (``forget``, a delete) is dropped from the snapshot at once.

An edit reads a block and writes it back under the owner's lock
(:mod:`contextos.agent.lock`), so parallel editors (threads, the server and the
CLI on one file) never write over each other's change.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeGuard

from ..engine.message_text import lone_surrogate_at
from ..errors import Conflict, NotFound, quoted
from ..types import MemoryRecord
from .lock import LeaseLost, owner_lock, renew_lease
from .owner import oldest_first, owned_records, owner_scope

#: The most characters of a refused argument a tool's error quotes back to the model.
ECHOED_CHARS = 1000

if TYPE_CHECKING:
    from contextos.engine.session import Session

    from ..memory import Memory

#: Blocks every CoreMemory has unless told otherwise, with their limits in characters.
DEFAULT_BLOCKS: Mapping[str, int] = {"persona": 2000, "human": 2000}
SOURCE = "core_memory"
MAX_LABEL_CHARS = 64
#: How many stored blocks of labels not configured (an older configuration's, or
#: records tagged so by any writer) the rendering shows, in label order.
MAX_OTHER_BLOCKS = 4


class CoreMemoryError(ValueError):
    """A core-memory edit that cannot be done; the message is shown to the model."""


@dataclass(frozen=True)
class CoreBlock:
    """One block: its label, value, limit (characters) and the memory holding it."""

    label: str
    value: str
    limit: int
    memory_id: str | None = None
    #: In the block an append or replace returns: the value the edit read and changed
    #: (what ``CorePrefix.edited`` compares with its snapshot). None elsewhere.
    previous: str | None = field(default=None, compare=False)
    #: The stored record's whole text, as read: what an edit expects to replace.
    record_text: str | None = field(default=None, compare=False, repr=False)


def _previous(read: CoreBlock | None) -> str | None:
    return None if read is None else read.value


def _header(label: str) -> str:
    return f"[core memory block: {label}]"


def _value_of(record: MemoryRecord) -> str:
    """A block's value in its record: the text after the header line, or the whole
    text when its first line is not the block's header.

    Why: ``GET /v1/agent/core`` shows a block's value and its ``memory_id``, and an app
    saving a corrected value with ``PATCH /v1/memories/{memory_id}`` (or MCP
    ``update_memory``) writes the value alone. Read after its first line, the block was
    empty, and the agent's next edit wrote over the correction (a review, s57). The
    next tool edit writes the header back."""
    head, _, rest = record.text.partition("\n")
    # A line end sent back as CRLF (a Windows tool, a form post) still ends the header.
    is_header = head.removesuffix("\r") == _header(str(record.metadata.get("label")))
    return rest if is_header else record.text


class CoreMemory:
    """Labeled, size-limited blocks stored as procedural memories of one scope."""

    def __init__(
        self,
        memory: Memory,
        *,
        user_id: str | None = None,
        agent_id: str | None = None,
        blocks: Mapping[str, int] | None = None,
    ) -> None:
        self.scope = owner_scope(memory, user_id, agent_id)
        limits = dict(DEFAULT_BLOCKS if blocks is None else blocks)
        for label, limit in limits.items():
            _check_label(label)
            if not isinstance(limit, int) or isinstance(limit, bool) or limit < 1:
                raise ValueError(f"the limit of block {label!r} must be a positive integer")
        self.memory = memory
        self.limits = limits

    # -- reading ----------------------------------------------------------------------
    def _stored(self) -> dict[str, CoreBlock]:
        """The stored blocks by label; of duplicates (an older version's race) the oldest.

        A record tagged as a block without a valid label is skipped: anyone who may
        add memories (an API key holder, a model through MCP ``add_memory``) can
        forge the tag, and one such record must not break every core read.
        """
        out: dict[str, CoreBlock] = {}
        for r in oldest_first(list(owned_records(self.memory, self.scope, SOURCE))):
            label = r.metadata.get("label")
            if not _valid_label(label) or label in out:
                continue
            out[label] = CoreBlock(
                label, _value_of(r), self._limit(label), r.id, record_text=r.text
            )
        return out

    def _limit(self, label: str) -> int:
        return self.limits.get(label, max(self.limits.values(), default=2000))

    def blocks(self) -> list[CoreBlock]:
        """The configured blocks (empty until written) and any other stored ones, by label."""
        stored = self._stored()
        labels = [*self.limits, *sorted(set(stored) - set(self.limits))]
        return [stored.get(label) or CoreBlock(label, "", self._limit(label)) for label in labels]

    def get(self, label: str) -> CoreBlock:
        """One block (its value is '' until written)."""
        self._known(label)
        return self._stored().get(label) or CoreBlock(label, "", self._limit(label))

    def _known(self, label: str) -> None:
        if label not in self.limits:
            raise CoreMemoryError(
                f"No core memory block {label!r}; the blocks are: {', '.join(self.limits)}"
            )

    # -- writing ----------------------------------------------------------------------
    def _locked(self) -> AbstractContextManager[None]:
        """The owner's core lock: each edit reads, changes and writes a block, and two
        editors (threads, processes) must not both write over the same old value."""
        return owner_lock(self.memory.store, self.scope, "core")

    def set(self, label: str, value: str) -> CoreBlock:
        """Write a block's whole value (kept in history)."""
        for _ in range(EDIT_TRIES):
            with self._locked():
                try:
                    return self._set(label, value)
                except _Changed:  # written in between by a writer outside the lock
                    continue
        raise CoreMemoryError(
            f"Core memory block {label!r} kept changing while this edit ran; nothing was "
            "written. Read the block again before editing it."
        )

    def _set(self, label: str, value: str, read: CoreBlock | None = None) -> CoreBlock:
        """``set`` with the lock held by the caller; ``read``: the block the new value
        was made from (an append or replace), which must still be the stored one.

        Why: the lock keeps editors out, not an erasure (``forget``, a delete by id);
        a block erased after an append read it was added again, old value and all.
        """
        self._known(label)
        if not isinstance(value, str):
            raise CoreMemoryError("a block's value must be a string")
        value = value.strip()
        limit = self._limit(label)
        if len(value) > limit:
            raise CoreMemoryError(
                f"Block {label!r} would be {len(value)} characters; its limit is {limit}. "
                "Shorten it, or move details to archival memory."
            )
        current = self._stored().get(label)
        if (
            read is not None
            and read.memory_id is not None
            and (current is None or current.memory_id != read.memory_id)
        ):
            raise _erased(label)
        if read is not None and current is not None and current.value != read.value:
            raise _Changed  # by a writer outside the lock (an operator's update)
        text = f"{_header(label)}\n{value}"
        meta = {"source": SOURCE, "label": label}
        try:
            renew_lease()
        except LeaseLost as exc:
            raise CoreMemoryError(str(exc).capitalize()) from None
        if current is None:
            # dedupe=False: an equal plain memory must not stand in for the block.
            rec = self.memory.add(
                text, **self.scope.ids(), metadata=meta, memory_type="procedural", dedupe=False
            )[0]
            return CoreBlock(label, value, limit, rec.id, _previous(read))
        if current.value != value:
            try:
                self.memory.update(
                    str(current.memory_id), text, metadata=meta, expected_text=current.record_text
                )
            except NotFound:  # erased since it was read just above
                raise _erased(label) from None
            except Conflict:  # changed since: by a writer the lock does not hold off
                raise _Changed from None
        return CoreBlock(label, value, limit, current.memory_id, _previous(read))

    def append(self, label: str, content: str) -> CoreBlock:
        """Add a line to a block."""
        need_text("content", content)

        def appended(value: str) -> str:
            return f"{value}\n{content.strip()}" if value else content.strip()

        return self._edit(label, appended)

    def _edit(self, label: str, change: Callable[[str], str]) -> CoreBlock:
        """Write ``change`` of the block's value, read and written under the owner's
        lock; made again from the new value when a writer the lock does not hold off
        (``Memory.update``: the inspector's Save, ``PATCH /v1/memories``, MCP
        ``update_memory``) changed the block in between.

        Why: the write went over whatever was stored then, and an operator's edit
        acknowledged in between was lost (a review: 51 of 150; a redacted passport
        number came back in 4 of 15 tries and was pinned in every later prompt)."""
        for _ in range(EDIT_TRIES):
            with self._locked():
                block = self.get(label)
                try:
                    return self._set(label, change(block.value), block)
                except _Changed:
                    continue
        raise CoreMemoryError(
            f"Core memory block {label!r} kept changing while this edit ran; nothing was "
            "written. Read the block again before editing it."
        )

    def replace(self, label: str, old_content: str, new_content: str) -> CoreBlock:
        """Replace ``old_content`` (which must appear) with ``new_content`` ('' deletes it)."""
        need_text("old_content", old_content)
        if not isinstance(new_content, str):
            raise CoreMemoryError("new_content must be a string")
        need_unicode("new_content", new_content)

        def replaced(value: str) -> str:
            if old_content not in value:
                # Quoted cut: a 99,000-character old_content came back whole, a tool
                # result the session then logged and sent on every call (a review).
                raise CoreMemoryError(
                    f"old_content {quoted(old_content, ECHOED_CHARS)} does not appear in "
                    f"block {label!r}; copy it exactly from the block"
                )
            return value.replace(old_content, new_content)

        return self._edit(label, replaced)

    # -- rendering --------------------------------------------------------------------
    def render(self, blocks: list[CoreBlock] | None = None) -> str:
        """The blocks (``blocks()`` when not given) as the model reads them in its prefix:
        each within its limit, and at most :data:`MAX_OTHER_BLOCKS` of labels not
        configured.

        Why bounded here: the limit was checked only by the block edits, and a block's
        record is a memory like any other: ``update_memory`` over MCP set one to 96,010
        characters, and ``add_memory`` with the block's tag made new labels, all pinned
        whole in every prompt (140,162 characters; a review). Past its limit a block is
        shown cut, saying so; its record keeps the whole text."""
        shown = self.blocks() if blocks is None else blocks
        others = [b for b in shown if b.label not in self.limits]
        shown = [b for b in shown if b.label in self.limits or b in others[:MAX_OTHER_BLOCKS]]
        tags = _tag_pattern(["core_memory", *(b.label for b in shown)])
        parts = ["<core_memory>"]
        for b in shown:
            value = tags.sub("&lt;", b.value[: b.limit])
            if len(b.value) > b.limit:
                value += f"\n[{len(b.value) - b.limit:,} more characters not shown: over the limit]"
            parts += [f'<{b.label} chars="{len(b.value)}/{b.limit}">', value, f"</{b.label}>"]
        parts.append("</core_memory>")
        return "\n".join(parts)


def _tag_pattern(names: list[str]) -> re.Pattern[str]:
    """The ``<`` of a tag (opening or closing) named as one of the rendering's own.

    Why: a block holds what the user said ("remember: ..."), and a value holding
    ``</human></core_memory>`` closed the blocks and put its text at the top of the
    prompt the model reads as instructions (a review). Only those ``<`` are written as
    ``&lt;``: any other text (code, arrows) stays as it is, so the model still copies
    a block's text exactly for ``core_memory_replace``."""
    alternatives = "|".join(re.escape(n) for n in sorted(set(names)))
    return re.compile(rf"<(?=/?\s*(?:{alternatives})\b)", re.IGNORECASE)


#: How many times an edit is made again after a writer outside the lock changed its
#: block in between (``CoreMemory._edit``).
EDIT_TRIES = 5


class _Changed(Exception):
    """The block changed since the edit read it (``CoreMemory._edit`` makes it again)."""


def _erased(label: str) -> CoreMemoryError:
    return CoreMemoryError(
        f"Core memory block {label!r} was erased while this edit ran; nothing was written. "
        "Read the block again before editing it."
    )


def _valid_label(label: object) -> TypeGuard[str]:
    """Whether ``label`` is a block label: 1-64 ASCII letters, digits or _."""
    return (
        isinstance(label, str)
        and 0 < len(label) <= MAX_LABEL_CHARS
        and label.replace("_", "").isalnum()
        and label.isascii()
    )


def _check_label(label: object) -> None:
    if not _valid_label(label):
        raise ValueError(f"a block label is 1-{MAX_LABEL_CHARS} ASCII letters, digits or _")


def need_text(name: str, value: object) -> None:
    """A tool argument the model must fill with text: CoreMemoryError (which the model
    reads as the tool's result) when it is empty or not a string."""
    if not isinstance(value, str) or not value.strip():
        raise CoreMemoryError(f"{name} must be a non-empty string")
    need_unicode(name, value)


def need_unicode(name: str, value: str) -> None:
    """CoreMemoryError when ``value`` holds a lone surrogate (not text a store can keep).
    Why here: the model read the codec's own error, "'utf-8' codec can't encode character
    '\\ud800' in position 32", its position counted in a header it never wrote (a review)."""
    at = lone_surrogate_at(value)
    if at is not None:
        raise CoreMemoryError(
            f"{name} is not valid Unicode (a lone surrogate at character {at}); send text"
        )


def compaction_point(session: Session | None) -> Any:
    """A key that changes exactly when the session compacts (None without a session)."""
    if session is None:
        return None
    state = session.state()
    return (state.compactions, state.start_seq)


class CorePrefix:
    """The core-memory text pinned in the cached prefix: a snapshot, refreshed rarely.

    ``text(key)`` re-renders when ``key`` differs from the last one (pass
    :func:`compaction_point` of the session), when no snapshot exists yet,
    or when ``refresh_after`` edits are waiting (None: never for that reason).
    ``live=True`` re-renders on every call (for comparison: it breaks the cache
    after each edit).
    """

    def __init__(
        self, core: CoreMemory, *, refresh_after: int | None = None, live: bool = False
    ) -> None:
        self.core = core
        self.refresh_after = refresh_after
        self.live = live
        self.pending = 0
        self.refreshes = 0
        self._text: str | None = None
        self._key: Any = None
        #: Each snapshot block's memory id and the value this loop knows it to hold: the
        #: snapshot's, or its own last edit's (to see an erasure or an edit elsewhere).
        self._known: dict[str, str] = {}
        #: The configured blocks the snapshot has no record of (never written yet).
        self._missing: set[str] = set()

    def edited(self, block: CoreBlock | None = None, before: str | None = None) -> None:
        """Count an edit that is not in the snapshot yet; ``block``: the block as the
        edit left it, ``before``: its value as the edit found it. The model reads the
        new value in the edit's tool result, so it is not a change the snapshot must
        catch up with, unless ``before`` is not what the snapshot holds: the block was
        changed elsewhere first (a redaction), and then the snapshot is rendered again
        at the next call. Without them the edit counts as made elsewhere."""
        self.pending += 1
        if block is not None and block.memory_id is not None and block.label in self._missing:
            if not before:  # this loop wrote the block first: its own edit, as above
                self._missing.discard(block.label)
                self._known[block.memory_id] = block.value
            return
        if block is None or block.memory_id not in self._known:
            return
        if before is not None and self._known[block.memory_id] == before:
            self._known[block.memory_id] = block.value
        else:
            self._text = None

    def catch_up(self) -> None:
        """Render the snapshot again at the next :meth:`text` when edits are waiting.

        For a loop whose edits cannot wait for a compaction point (a session that never
        compacts: its window drops the edit's call and result once the history outgrows
        its budget, and the model then saw the edit nowhere; a review). Called between
        two questions, never inside a tool loop, so a loop's requests share one prefix."""
        if self.pending:
            self._text = None

    def text(self, key: Any = None) -> str:
        """The snapshot, rendered again when it is due (see the class) or erased."""
        due = self.refresh_after is not None and self.pending >= self.refresh_after
        if self.live or self._text is None or key != self._key or due or self._changed():
            blocks = self.core.blocks()
            self._text, self._key, self.pending = self.core.render(blocks), key, 0
            self._known = {b.memory_id: b.value for b in blocks if b.memory_id is not None}
            self._missing = {b.label for b in blocks if b.memory_id is None}
            self.refreshes += 1
        return self._text

    def _changed(self) -> bool:
        """Whether a block in the snapshot is no longer stored (``forget``, a delete), or
        holds a value this loop did not write (an edit by another process, the server,
        MCP or the CLI: ``core_memory_replace`` to redact a passport number).

        Why: neither moves the compaction point of a session that lives on, and the
        snapshot kept sending the erased or replaced text to the model, call after
        call. This loop's own edits are in its history (the tool's result) and wait for
        the next refresh, which keeps the cached prefix. One read of a few ids by key.

        A configured block the snapshot had no record of and another writer has written
        since (another agent of the user) counts too: only the snapshot's records were
        read, and the new block stayed out of the prompt for good (a review). Read only
        while such a block is missing: one read of the owner's blocks.
        """
        if self._missing and self._missing & set(self.core._stored()):
            return True
        if not self._known:
            return False
        memory = self.core.memory
        stored = memory.store.get_many(memory.tenant, list(self._known))
        return len(stored) < len(self._known) or any(
            _value_of(r) != self._known[r.id] for r in stored
        )


__all__ = [
    "DEFAULT_BLOCKS",
    "CoreBlock",
    "CoreMemory",
    "CoreMemoryError",
    "CorePrefix",
    "compaction_point",
]
