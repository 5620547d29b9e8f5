"""How a memory reads when it is put in front of a model, and what gets embedded.

One rendering everywhere (search results, windows, benchmarks) so that token
budgets count exactly what is sent.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime

from ..text.claims import starts_with_name
from ..times import zone
from ..types import MemoryRecord

#: Metadata keys that may hold an image's caption (LoCoMo writes ``blip_caption``); the
#: first one set wins. Ingestion, extraction, inference and rendering all read these.
CAPTION_KEYS = ("caption", "blip_caption", "image_caption")

#: Metadata key of a fact stored beside a conversation turn (``Memory(turn_facts=True)``):
#: the id of the turn record it came from. Search returns one hit per turn and its facts
#: (``retrieval.by_source``). A name of its own, not ``source``: applications label
#: their memories with ``{"source": "chat"}`` and the like, and such records must stay
#: records of their own. Reserved: ``Memory.add`` refuses it in the caller's metadata.
FACT_OF = "fact_of"

#: Metadata key of a session turn added with its facts beside it (``add(facts=True)``
#: or a ``Memory(turn_facts=True)``): ``True``. An update of the turn derives its facts
#: again from its new text, whichever Memory updates it (``Memory._derived``).
#: Reserved in a session's add, as :data:`FACT_OF` is in every add.
TURN_FACTS = "turn_facts"

#: Metadata key where ``Memory.add`` keeps the zone a memory's ``event_time`` was given
#: in, when not UTC: minutes east of UTC. Why: the stores keep the instant only (epoch
#: seconds in SQLite, ``timestamptz`` in PostgreSQL), and a turn said at 20:00 in Los
#: Angeles on 8 May was dated 9 May and its "yesterday" read as 8 May (a review). A
#: memory's date is its date there (:func:`local_time`): the one rendered, the one
#: indexed in its context, and the day its facts' relative dates are read from.
UTC_OFFSET = "utc_offset"

#: Names what ``render`` produces. Stored with each record's token count (beside the
#: tokenizer's name, see ``memory.record_tokens``) and changed whenever ``render``
#: changes, so counts of the old rendering are not trusted.
RENDERING = "r1"


def render(record: MemoryRecord) -> str:
    """``[2023-05-08] Caroline: text (image: caption)`` — date and speaker when known."""
    parts = []
    if record.event_time is not None:
        parts.append(f"[{local_time(record.event_time, record.metadata).date().isoformat()}]")
    parts.append(_with_speaker(record))
    caption = caption_of(record.metadata)
    if caption:
        parts.append(f"(image: {caption})")
    return " ".join(parts)


def local_time(when: datetime, metadata: Mapping[str, object]) -> datetime:
    """``when`` in the zone ``metadata`` keeps (:data:`UTC_OFFSET`); as it is (UTC) when
    it keeps none, or one the time cannot be moved into (past year 9999)."""
    tz = zone(metadata.get(UTC_OFFSET))
    try:
        return when.astimezone(tz) if tz is not None else when
    except (OverflowError, ValueError):
        return when


#: Names what ``embedding_text`` produces. Stored with each vector (beside the model's
#: name, see ``vector_model``) and changed whenever ``embedding_text`` changes, so a
#: store's vectors written the old way are queued again and re-embedded in the
#: background instead of being mixed with new ones forever.
EMBEDDING_RECIPE = "turn+facts+factvecs"


def vector_model(model_id: str) -> str:
    """What a vector is stored as: the embedder's model and the text recipe it embedded."""
    return f"{model_id}/{EMBEDDING_RECIPE}"


def embedding_text(
    record: MemoryRecord, *, expand: bool = True, facts: Sequence[str] | None = None
) -> str:
    """The text we embed: speaker, the memory and its image caption (no date); a
    conversation turn is followed by its extracted facts (``memory.expansion``;
    ``facts`` when the caller already has them) unless ``expand`` is False."""
    from .expansion import expansion_facts

    text = _with_speaker(record)
    caption = caption_of(record.metadata)
    base = f"{text} (image: {caption})" if caption else text
    if not expand:
        return base
    return " ".join([base, *(expansion_facts(record) if facts is None else facts)])


def _with_speaker(record: MemoryRecord) -> str:
    """``Speaker: text``, unless the text already starts with the speaker's name (a
    whole name: "Anna lives in Rome", said by Ann, is shown as Ann's)."""
    speaker = record.metadata.get("speaker")
    if not speaker or starts_with_name(record.text, str(speaker)):
        return record.text
    return f"{speaker}: {record.text}"


def caption_of(metadata: Mapping[str, object]) -> str:
    """The image caption in a message's or a record's metadata ("" when there is none)."""
    for key in CAPTION_KEYS:
        value = metadata.get(key)
        if isinstance(value, str) and value.strip():
            return value.strip()
    return ""
