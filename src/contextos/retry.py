"""Waiting between tries of a conditional write that another writer refused.

Every compare-and-set in contextos (an add to a session, an update, a session's state)
reads, decides and writes only if nothing changed meanwhile; when it did, it reads
and tries again. Writers that retry at once keep meeting each other, and the slowest
(an inferring add, a compaction) can lose every try to faster ones. Each refused try
therefore waits a random while, up to twice as long as the one before ("full jitter",
capped), which spreads the writers out.
"""

from __future__ import annotations

import random
import time

#: The first wait's upper bound; each refused try doubles it up to ``WAIT_CAP_S``.
WAIT_BASE_S = 0.001
#: 0.2 s, not 0.05: since an inferring add also checks the user's newest record (a
#: second add of the same fact must see the first), sixteen handles adding to one user
#: on PostgreSQL left an inferring add refused on all 50 tries in 3 of 18 runs of
#: tests/test_infer_races.py at 0.05, and in none of 12 at 0.2 (the runs also finished
#: sooner: fewer writers met).
WAIT_CAP_S = 0.2


def wait_before_retry(attempt: int) -> None:
    """Sleep a random while after refused try ``attempt`` (0-based)."""
    time.sleep(random.uniform(0, min(WAIT_CAP_S, WAIT_BASE_S * 2**attempt)))
