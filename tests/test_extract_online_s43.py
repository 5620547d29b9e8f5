"""Inferring adds and `contextos extract` on what users really say and paste (review s43).

The s43 review (area "extractpipe") found: a past job mentioned in a live chat ended
the current one; a fact whose value ran on past the name ("works at Google as an
engineer") was never ended by its negation; pasted code and tracebacks became one
"semantic" fact per line; and `contextos extract` read JSON of any other shape, and
chat exports with timestamps, as "Speaker: text" lines, printing garbage with exit 0.
Adds go through ``Memory.add(..., infer=True)`` on an SQLite file, the command through
the real CLI.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from conftest import LOCOMO
from contextos import Memory
from contextos.bench.extract_speed import load_locomo_sessions
from contextos.cli.extract_cmds import speaker_name
from contextos.cli.main import cli
from contextos.memory.extract import OfflineExtractor, without_code
from contextos.testing.embedders import HashEmbedder
from contextos.text.claims import claim
from contextos.types import Filter, Message


def _memory(tmp_path: Path) -> Memory:
    return Memory(tmp_path / "m.db", embedder=HashEmbedder(), background_embedding=False)


def _ana(text: str) -> dict[str, object]:
    return {"role": "user", "name": "Ana", "content": text}


def _open(m: Memory) -> list[str]:
    return sorted(r.text for r in m.get_all(user_id="ana"))


def _said(m: Memory, *texts: str) -> list[str]:
    """What stays open after Ana says ``texts`` live (no time given: a chat), one add each."""
    for text in texts:
        m.add([_ana(text)], user_id="ana", infer=True)
    return _open(m)


# -- 1. a past job or home, told live, does not end the current one -------------------
@pytest.mark.parametrize(
    ("now", "past", "past_fact"),
    [
        (
            "I work at Meta as a data scientist.",
            "I worked at IBM in 2012.",
            "Ana worked at IBM in 2012.",
        ),
        (
            "I work at Meta as a data scientist.",
            "I used to work at IBM.",
            "Ana used to work at IBM.",
        ),
        (
            "I work at Meta as a data scientist.",
            "I was working at IBM when we met.",
            "Ana was working at IBM when we met.",
        ),
        ("I live in Paris.", "I used to live in Rome.", "Ana used to live in Rome."),
    ],
)
def test_a_past_job_or_home_told_live_does_not_end_the_current_one(
    tmp_path: Path, now: str, past: str, past_fact: str
) -> None:
    # Was: "I worked at IBM in 2012" closed "works at Meta" (superseded_by the 2012 job),
    # and every later search answered with IBM.
    with _memory(tmp_path) as m:
        current = "Ana " + now.removeprefix("I ").replace("work ", "works ", 1)
        current = current.replace("live ", "lives ", 1)
        assert _said(m, now, past) == sorted([current, past_fact])
        hits = [h.record.text for h in m.search("where does Ana work or live", user_id="ana")]
        assert current in hits


def test_a_new_job_said_now_still_replaces_the_old_one(tmp_path: Path) -> None:
    with _memory(tmp_path) as m:
        assert _said(m, "I work at Meta as a data scientist.", "I work at Google now.") == [
            "Ana works at Google now."
        ]


# -- 2. a negation ends the fact of the same value, whatever detail follows it --------
@pytest.mark.parametrize(
    ("fact", "negation"),
    [
        ("I work at Google as an engineer.", "I no longer work at Google."),
        ("I work for Acme as a designer.", "I quit my job at Acme."),
        ("I live in Paris near my parents.", "I don't live in Paris anymore."),
        ("I work as a nurse at the city hospital.", "I no longer work as a nurse."),
        ("I am married to Tom from work.", "I am no longer married to Tom."),
    ],
)
@pytest.mark.parametrize("named", [True, False])
def test_a_negation_ends_a_fact_whose_value_runs_on(
    tmp_path: Path, fact: str, negation: str, named: bool
) -> None:
    # Was: the stored value was "google as engineer", the negation's "google": both open.
    with _memory(tmp_path) as m:
        for text in (fact, negation):
            m.add([_ana(text)] if named else text, user_id="ana", infer=True)
        assert _open(m) == []
        every = m.get_all(user_id="ana", filters=Filter(include_invalid=True))
        assert len([r for r in every if r.valid_to is not None]) == 1


@pytest.mark.parametrize(
    ("text", "slot", "value"),
    [
        ("Ana works at Google as an engineer.", "employer", "google"),
        ("Ana works at Google in Zurich.", "employer", "google"),
        ("Ana moved to Paris from Rome in 2019.", "location", "paris"),
        ("Ana lives in New York near Central Park.", "location", "new york"),
        ("Ana lives in Paris on the left bank.", "location", "paris"),
        ("Ana works as a nurse at the city hospital.", "job", "nurse"),
        ("Ana is dating a guy from Berlin.", "partner", "guy"),
        ("Ana works at Johnson & Johnson.", "employer", "johnson & johnson"),
    ],
)
def test_a_value_ends_where_the_detail_beside_it_starts(text: str, slot: str, value: str) -> None:
    held = claim(text, "Ana")
    assert held is not None and (held.subject, held.slot, held.value) == ("ana", slot, value)


@pytest.mark.parametrize(
    ("text", "slot", "value"),
    [
        ("Ana lives in an apartment in Brooklyn.", "location", "apartment in brooklyn"),
        ("Ana works at a hospital in Boston.", "employer", "hospital in boston"),
        ("Ana lives in a house on Elm Street.", "location", "house on elm street"),
        ("Ana works at the Louvre in Paris.", "employer", "louvre"),
        ("Ana has worked at Meta since March.", "employer", "meta"),
        ("I've worked at Meta for a year.", "employer", "meta"),
    ],
)
def test_a_place_stays_in_a_value_that_is_no_proper_name(text: str, slot: str, value: str) -> None:
    # Was (diff43B): "apartment" for Brooklyn and Queens alike; "has worked at" no claim.
    held = claim(text, "Ana")
    assert held is not None and (held.slot, held.value) == (slot, value)


@pytest.mark.parametrize(
    ("before", "after"),
    [
        ("I live in an apartment in Brooklyn.", "I live in an apartment in Queens now."),
        ("I work at a hospital in Boston.", "I work at a hospital in Chicago now."),
        ("I live in a house on Elm Street.", "I live in a house on Oak Street now."),
        ("I work at Google.", "I have worked at Meta since March."),
    ],
)
def test_a_move_to_another_place_of_the_same_kind_replaces_the_old_one(
    tmp_path: Path, before: str, after: str
) -> None:
    # Was (diff43B): both stayed open, the value of each being "apartment" / "hospital".
    with _memory(tmp_path) as m:
        (opened,) = _said(m, before, after)
        assert opened.startswith("Ana ") and after.split()[-2] in opened


def test_another_employer_still_replaces_one_with_detail(tmp_path: Path) -> None:
    with _memory(tmp_path) as m:
        opened = _said(m, "I work at Google as an engineer.", "I work at Meta as an engineer.")
        assert opened == ["Ana works at Meta as an engineer."]


# -- 3. code and tracebacks are not facts ---------------------------------------------
PASTE = (
    "Why does this fail? I use Python 3.12.\n```python\nimport os\n# I want my files sorted\n"
    "my_files = sorted(os.listdir(my_dir))\nfor f in my_files:\n    print(f)\n```\n"
    'Traceback (most recent call last):\n  File "x.py", line 3, in <module>\n'
    "NameError: name 'my_dir' is not defined"
)


def test_a_pasted_snippet_and_its_traceback_leave_only_the_prose_around_them(
    tmp_path: Path,
) -> None:
    # Was: nine "semantic" facts, one per line of code ("Ana: import os", "# Ana wants
    # Ana's files sorted", "Ana: NameError: ..."), retrieved ahead of real facts.
    with _memory(tmp_path) as m:
        stored = m.add([_ana(PASTE)], user_id="ana", infer=True)
        assert [r.text for r in stored] == ["Ana uses Python 3.12."]
        hits = m.search("what does Ana use", user_id="ana")
        assert [h.record.text for h in hits] == ["Ana uses Python 3.12."]


def test_a_first_person_comment_in_code_is_no_claim(tmp_path: Path) -> None:
    code = "Here is my code:\n```python\ndef f(x):\n    return x + 1  # I live in Rome\n```"
    with _memory(tmp_path) as m:
        assert _said(m, "I live in Paris.", code, "Can you fix it?") == [
            "Ana lives in Paris.",
            "Here is Ana's code:",
        ]


@pytest.mark.parametrize(
    ("text", "kept"),
    [
        # a fence inside a line, as chat apps take it
        (
            "I tried ```rm -rf build``` and I moved to Berlin.",
            ["Ana tried and Ana moved to Berlin."],
        ),
        # tildes, and a longer closing fence
        ("~~~\nx = 1\n~~~~\nI moved to Berlin.", ["Ana moved to Berlin."]),
        # an unclosed fence runs to the end, as in Markdown
        ("I moved to Berlin.\n```\nmy_city = 'Rome'\nI live in Rome", ["Ana moved to Berlin."]),
        # a traceback outside a fence, and the prose after it
        (
            'Traceback (most recent call last):\n  File "a.py", line 1, in <module>\n'
            "    f()\nValueError: bad\nI moved to Berlin.",
            ["Ana moved to Berlin."],
        ),
        # lines of code without a fence
        (
            "I moved to Berlin.\nimport numpy as np\nx = np.zeros(3)\nprint(x)\n"
            "if x[0] == 0:\n}\nconsole.log(x);",
            ["Ana moved to Berlin."],
        ),
    ],
)
def test_code_is_skipped_and_the_prose_kept(text: str, kept: list[str]) -> None:
    found = OfflineExtractor().extract([Message("user", text, name="Ana")])
    assert [c.text for c in found] == kept


@pytest.mark.parametrize(
    "line",
    [
        "for me in the end: it was worth it",
        "for me in the end:",
        "If you want (no rush): call me tomorrow.",
        "I live in Paris (the 11th arrondissement).",
        "Note: I moved to Lyon.",
        "return home safely!",
        "I paid $5 for it; worth it.",
        "She said: x is fine = good.",
        "My score = 42 points, so I won.",
        "Smile :) {just kidding}",
        "1. Buy milk",
        "- I like pears",
        "# My trip to Rome",
        "... and then I left.",
        "What time is it? 10:32",
        "I went to class today: boring.",
        "while at the store: I saw Tom.",
    ],
)
def test_ordinary_lines_are_not_taken_for_code(line: str) -> None:
    assert without_code(line) == line
    assert (
        without_code(f"I went out.\n{line}\nI came back.") == f"I went out.\n{line}\nI came back."
    )


@pytest.mark.parametrize(
    "line",
    [
        "x = 5 apples is what I bought today. I live in Paris and I work at Google.",
        "Update = I moved to Berlin last week and I work at Siemens now.",
        "Total = 3 kids and 2 dogs, and I am allergic to peanuts.",
        "I met my wife Eva (a nurse) at the gym in 2019 and we live in Oslo (for now);",
        "Affliation = Avatara of Kamadeva.",
        "Plan(b) is what we chose for the trip",
    ],
)
def test_a_line_of_prose_shaped_as_code_is_kept(line: str) -> None:
    # Was (diff43B): dropped whole as an assignment or a ");" line, its facts with it.
    assert without_code(line) == line
    assert without_code(f"I went out.\n{line}") == f"I went out.\n{line}"


@pytest.mark.parametrize(
    "line",
    [
        'msg = "hello there my friend"',
        "x = a if b else c",
        "result = foo(bar) or default_value",
        'name = input("What is your name? ")',
        'print(f"I live in {city}")',
        "total += price * qty",
        "foo(a, b);",
        "return x + 1",
        "config = {",
    ],
)
def test_a_line_of_code_with_words_in_it_is_still_skipped(line: str) -> None:
    assert without_code(f"I moved to Berlin.\n{line}") == "I moved to Berlin.\n"


def test_an_update_said_as_an_assignment_is_stored(tmp_path: Path) -> None:
    with _memory(tmp_path) as m:
        text = "Update = I moved to Berlin last week and I work at Siemens now."
        assert [r.text for r in m.add([_ana(text)], user_id="ana", infer=True)] != []
        assert any("Siemens" in r.text for r in m.get_all(user_id="ana"))


@pytest.mark.skipif(not LOCOMO.is_file(), reason="LoCoMo dev split not present")
def test_no_locomo_turn_is_taken_for_code() -> None:
    turns = [t for s in load_locomo_sessions(LOCOMO) for t in s.messages]
    assert len(turns) > 1000
    assert [t.content for t in turns if without_code(t.content) != t.content] == []


# -- 4. `contextos extract` reads the documented shapes, and refuses the others -------
def _extract(tmp_path: Path, name: str, content: str) -> Result:
    path = tmp_path / name
    path.write_text(content, encoding="utf-8")
    return CliRunner().invoke(cli, ["extract", str(path), "--session-time", "2024-03-12"])


def _lines(result: Result) -> list[str]:
    assert result.exit_code == 0, result.output
    return result.output.strip().splitlines()


def test_a_json_list_of_strings_is_read_as_add_reads_it(tmp_path: Path) -> None:
    # Was: '[semantic] ["user lives in Paris.", "user's sister works at Google."]'
    result = _extract(tmp_path, "s.json", '["I live in Paris.", "My sister works at Google."]')
    assert _lines(result) == [
        "[semantic] User lives in Paris.",
        "[semantic] User's sister works at Google.",
    ]
    mixed = '{"messages": [{"role": "user", "content": "I live in Paris."}, "I work at Acme."]}'
    assert _lines(_extract(tmp_path, "m.json", mixed)) == [
        "[semantic] User lives in Paris.",
        "[semantic] User works at Acme.",
    ]


@pytest.mark.parametrize(
    ("content", "needle"),
    [
        ('{"conversation": {"speaker_a": "Ana", "session_1": []}}', 'without "messages"'),
        ('{"messages": "I live in Paris."}', "not a list of messages"),
        ("42", "not a list of messages"),
        ('"I live in Paris."', "not a list of messages"),
        ("[]", "holds no messages"),
        ('{"messages": []}', "holds no messages"),
        (
            '{"messages": [{"role": "user", "content": "I live in Paris."}]}\n'
            '{"messages": [{"role": "user", "content": "I work at Acme."}]}\n',
            "JSON Lines",
        ),
        ('{"messages": [{"role": "user", "content": "I live', "not valid JSON"),
        ('[{"role": "user", "content": "I live in Paris."},', "not valid JSON"),
    ],
)
def test_json_of_another_shape_is_refused_naming_the_shapes(
    tmp_path: Path, content: str, needle: str
) -> None:
    # Was: read as "Speaker: text" lines, '{"messages"' the speaker, printed, exit 0.
    result = _extract(tmp_path, "x.json", content)
    assert result.exit_code == 2, result.output
    assert needle in result.output and "FILE" in result.output
    if "holds no messages" not in needle and "not valid" not in needle:
        assert "Speaker: text" in result.output and '{"messages": [...]' in result.output
    assert "Traceback" not in result.output


@pytest.mark.parametrize(
    "content",
    [
        "12/03/2024, 10:32 - Ana: I adopted a cat.",  # a time before the name (WhatsApp)
        "Check https://example.com, I wrote it.",  # a URL's scheme
        "Note: I am allergic to nuts.",  # a label
        "[10:32] <Ana> I live in Paris.",  # IRC
    ],
)
def test_a_prefix_that_is_no_name_makes_no_speaker(tmp_path: Path, content: str) -> None:
    # Was: "12/03/2024, 10 adopted a cat", "Check https wrote it", "Note is allergic".
    (out,) = _lines(_extract(tmp_path, "c.txt", content))
    for garbage in ("10 adopted", "Check https wrote", "Note is", "[10 lives"):
        assert garbage not in out


def test_a_line_without_a_speaker_continues_the_one_before(tmp_path: Path) -> None:
    # Was: "User also has a dog named Rex."
    chat = "Ana: I live in Paris.\nI also have a dog named Rex.\n\nBob: Nice! I work at Acme.\n"
    assert _lines(_extract(tmp_path, "c.txt", chat)) == [
        "[semantic] Ana lives in Paris.  (1)",
        "[semantic] Ana also has a dog named Rex.  (2)",
        "[semantic] Bob works at Acme.  (4)",
    ]


def test_common_speaker_labels_are_speakers(tmp_path: Path) -> None:
    # Was (diff43B): "Ahmed al-Sayed: Ana lives in Cairo." -- each credited to Ana.
    chat = (
        "Ana: I live in Lisbon.\nAhmed al-Sayed: I live in Cairo.\n"
        "Maria (mom): I live in Porto.\nUser2: I work at Siemens.\n"
        "Speaker 1: I live in Paris.\nSPEAKER_00: My dog is named Rex.\n"
    )
    assert _lines(_extract(tmp_path, "c.txt", chat)) == [
        "[semantic] Ana lives in Lisbon.  (1)",
        "[semantic] Ahmed al-Sayed lives in Cairo.  (2)",
        "[semantic] Maria (mom) lives in Porto.  (3)",
        "[semantic] User2 works at Siemens.  (4)",
        "[semantic] Speaker 1 lives in Paris.  (5)",
        "[semantic] SPEAKER_00's dog is named Rex.  (6)",
    ]


def test_a_label_not_read_as_a_name_is_no_other_speakers_line(tmp_path: Path) -> None:
    # A prefix that is no name, nor prose or a label, leaves the line to no one (not to
    # the speaker before); prose and a label before ":" continue that speaker.
    chat = (
        "Ana: I live in Paris.\n[10:32] <Bob> I live in Rome.\n"
        "I also have a cat.\nCleo: Hi.\nNote: I am allergic to nuts.\n"
        "I went to class today: I work at Acme.\n"
    )
    assert _lines(_extract(tmp_path, "c.txt", chat)) == [
        "[semantic] Ana lives in Paris.  (1)",
        "[semantic] [10:32] <Bob> user lives in Rome.  (2)",
        "[semantic] User also has a cat.  (3)",
        "[semantic] Note: Cleo is allergic to nuts.  (5)",
        "[episodic 2024-03-12] Cleo went to class on 12 March 2024: Cleo works at Acme.  (6)",
    ]


@pytest.mark.parametrize(
    ("prefix", "name"),
    [
        ("Ana", "Ana"),
        ("  Caroline ", "Caroline"),
        ("Dr. Ann Lee", "Dr. Ann Lee"),
        ("Vincent van Gogh", "Vincent van Gogh"),
        ("O'Brien", "O'Brien"),
        ("Łukasz", "Łukasz"),
        ("王芳", "王芳"),
        ("bob", "bob"),
        ("12/03/2024, 10", None),
        ("[10", None),
        ('{"messages"', None),
        ("Check https", None),
        ("Note", None),
        ("PS", None),
        ("User1", "User1"),
        ("Speaker 1", "Speaker 1"),
        ("SPEAKER_00", "SPEAKER_00"),
        ("Ahmed al-Sayed", "Ahmed al-Sayed"),
        ("Maria (mom)", "Maria (mom)"),
        ("Speaker A (interviewer)", "Speaker A (interviewer)"),
        ("Note (x)", None),
        ("10 (x)", None),
        ("1 Speaker", None),
        ("_x", None),
        ("and then he said", None),
        ("My Very Long Display Name Here", None),
        ("", None),
    ],
)
def test_a_speaker_is_read_only_where_it_looks_like_a_name(prefix: str, name: str | None) -> None:
    assert speaker_name(prefix) == name


def test_a_json_file_still_reads_as_before(tmp_path: Path) -> None:
    talk = {"session_time": "2024-03-12", "messages": [_ana("I adopted a cat yesterday.")]}
    result = CliRunner().invoke(cli, ["extract", "-", "--json"], input=json.dumps(talk))
    assert result.exit_code == 0, result.output
    [cand] = json.loads(result.output)
    assert cand["text"] == "Ana adopted a cat on 11 March 2024."
