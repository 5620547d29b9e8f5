"""BM25 over PostgreSQL's ``tsvector``, so both stores rank keyword hits alike.

PostgreSQL's own ``ts_rank``/``ts_rank_cd`` know nothing of how rare a word is:
a memory that says "Caroline" twice outranks one that says "adoption" once for
the question "what did Caroline say about adoption?", although in a
conversation with Caroline her name is in every other turn. The SQLite store
ranks with FTS5's BM25, which weighs each word by its inverse document
frequency; this module computes the same Okapi BM25 in one SQL statement:

- candidates: rows of the filter whose ``tsv`` matches any query word (GIN);
- term frequency: positions of each query lexeme in the row, weighted 1.0 in
  the text (weight A) and ``context_weight`` (0.5) in the context (weight B),
  as FTS5's column weights do in the SQLite store;
- document frequency and collection size: counted within the filter (the
  tenant/user scope the search runs in, narrowed by the rest of the filter; the
  SQLite store counts the scope's rows, see docs/postgres.md); document length =
  words in text and context, stopwords included (the ``ntok`` column, the words
  ``tsv`` is made of: the text cut at ``schema.SEPARATOR_RANGES``), as FTS5 counts
  tokens;
- inverse document frequency: FTS5's, ln((N - n + 0.5) / (n + 0.5)), and
  ``IDF_FLOOR`` where that is not positive (a word in half the rows or more).
  The usual ln(1 + ...) kept weight for such a word, so a row repeating it
  could outrank the one row holding the rare word, where SQLite ranked the
  other way.

Cost grows with the number of matching rows plus one pass over the filter's
rows (capped at ``STATS_ROWS``; past that the collection size saturates at
``STATS_ROWS`` while each word's rows are still all counted, so in a larger
scope a word in more than about half of ``STATS_ROWS`` rows counts as common). Measured
on the 2-core box under load, 10,000 memories in the searched scope: ~45 ms a
query, most of it that pass (SQLite's FTS5: ~8 ms).
"""

from __future__ import annotations

from contextos.store.postgres.schema import TS_CONFIG

#: Collection statistics (size, average length) are read from at most this many rows of the
#: filter, so a search over a huge scope costs a bounded pass; below it they are exact.
STATS_ROWS = 50_000

#: Okapi BM25 parameters (FTS5's defaults).
K1 = 1.2
B = 0.75

#: FTS5's IDF of a word in half the rows or more, where ln((N - n + 0.5) / (n + 0.5)) is
#: not positive: the word then barely counts, whatever its frequency in a row.
IDF_FLOOR = 1e-6


def bm25_sql(where: str, context_weight: float = 0.5) -> str:
    """The ranking query for filter clause ``where`` (over alias ``m``); a word in the
    context counts ``context_weight`` times a word in the text.

    Parameters, in order: query words (text[]), the OR tsquery text, the filter's
    parameters, the filter's parameters again, the limit.
    """
    return f"""
WITH q AS (
    SELECT DISTINCT lx FROM unnest(%s::text[]) AS w(word),
        LATERAL unnest(tsvector_to_array(to_tsvector('{TS_CONFIG}', w.word))) AS lx
), cand AS MATERIALIZED (
    SELECT m.id, m.seq, m.tsv, m.ntok FROM memories m
    WHERE m.tsv @@ to_tsquery('{TS_CONFIG}', %s) AND {where}
), tf AS (
    SELECT c.id, c.seq, u.lexeme, c.ntok::float8 AS dl,
        (cardinality(array_positions(u.weights, 'A'))
            + {float(context_weight)!r} * cardinality(array_positions(u.weights, 'B')))::float8 AS f
    FROM cand c, LATERAL unnest(c.tsv) AS u
    WHERE u.lexeme IN (SELECT lx FROM q)
), df AS (
    SELECT lexeme, count(*)::float8 AS n FROM tf GROUP BY lexeme
), stats AS (
    SELECT count(*)::float8 AS n, greatest(avg(ntok), 1)::float8 AS avgdl
    FROM (SELECT m.ntok FROM memories m WHERE {where} LIMIT {STATS_ROWS}) AS sample
), idf AS (
    SELECT lexeme, CASE WHEN w > 0 THEN w ELSE {IDF_FLOOR!r} END AS w FROM (
        SELECT df.lexeme, ln((greatest(s.n, df.n) - df.n + 0.5) / (df.n + 0.5)) AS w
        FROM df CROSS JOIN stats s
    ) AS fts5
)
SELECT tf.id,
    sum(idf.w * tf.f * {K1 + 1} / (tf.f + {K1} * (1 - {B} + {B} * tf.dl / s.avgdl))) AS score
FROM tf JOIN idf USING (lexeme) CROSS JOIN stats s
GROUP BY tf.id, tf.seq
ORDER BY score DESC, tf.seq
LIMIT %s
"""
