"""A small multi-session conversation written for the demo (not LoCoMo).

Two friends, Maya and Theo, over three sessions in spring 2024: enough
facts, dates, an image and a change of mind to show retrieval, extraction,
compaction and caching at work.
"""

from __future__ import annotations

SPEAKERS = ("Maya", "Theo")

SESSIONS: tuple[tuple[str, tuple[tuple[str, str], ...]], ...] = (
    (
        "2024-03-02T18:30:00+00:00",
        (
            ("Maya", "Hey Theo! I finally signed up for the Lisbon half marathon in May."),
            ("Theo", "That's huge! How is the training going so far?"),
            (
                "Maya",
                "Slowly. I ran 12 kilometres yesterday along the river and my left knee hurt.",
            ),
            ("Theo", "You should see a physio about that knee before it gets worse."),
            ("Maya", "Good idea. My sister Ines is a physiotherapist in Porto, I'll call her."),
            ("Theo", "By the way, I adopted a dog last week! Her name is Pimenta."),
            ("Maya", "No way! What breed is she?"),
            ("Theo", "A three-year-old Portuguese water dog from the shelter in Setubal."),
            (
                "Maya",
                "I'm allergic to most dogs, but water dogs are supposed to be hypoallergenic.",
            ),
            ("Theo", "Then you can come over and meet her. She loves the beach."),
        ),
    ),
    (
        "2024-04-14T10:05:00+00:00",
        (
            ("Theo", "How was the call with Ines about your knee?"),
            (
                "Maya",
                "She said it's runner's knee and gave me strengthening exercises. No running for two weeks.",
            ),
            ("Theo", "Two weeks off is annoying but better than missing the race."),
            (
                "Maya",
                "Exactly. Meanwhile I started swimming at the municipal pool on Tuesdays and Thursdays.",
            ),
            ("Theo", "Pimenta would love that pool. Look at her at the beach this morning!"),
            ("Maya", "Adorable! Is she always that sandy?"),
            (
                "Theo",
                "Always. Also, I got the job at the architecture studio in Lisbon, I start on 1 June.",
            ),
            ("Maya", "Congratulations! So you're moving from Coimbra to Lisbon?"),
            ("Theo", "Yes, I'm looking for a flat in Alfama with a small garden for Pimenta."),
            ("Maya", "Please always remind me to stretch after runs, I keep forgetting."),
        ),
    ),
    (
        "2024-05-20T19:45:00+00:00",
        (
            ("Maya", "I did it! I finished the half marathon yesterday in 1 hour 58 minutes."),
            ("Theo", "Under two hours! The knee held up?"),
            ("Maya", "It did, thanks to Ines's exercises and the swimming."),
            (
                "Theo",
                "Change of plans on my side: I found a flat in Graca, not Alfama. It has a terrace.",
            ),
            ("Maya", "Graca is lovely. Does Pimenta like the terrace?"),
            ("Theo", "She sleeps there all afternoon. The move is next Saturday."),
            ("Maya", "I can help you move on Saturday, I'll bring my car."),
            ("Theo", "You're the best. I'll make my grandmother's bacalhau as a thank you."),
            ("Maya", "Deal. Next goal for me is the Porto marathon in November."),
            ("Theo", "A full marathon! Ines will be happy you're coming to Porto."),
        ),
    ),
)

#: Questions the demo asks of the memory.
QUESTIONS: tuple[str, ...] = (
    "Where is Theo's new flat?",
    "What did Ines say about Maya's knee?",
    "What is the name and breed of Theo's dog?",
    "What was Maya's half marathon time?",
)

#: An image caption attached to one turn, as a vision model would describe it.
CAPTIONS = {
    "Pimenta would love that pool. Look at her at the beach this morning!": "a photo of a curly black dog running on a sandy beach"
}

#: The coach's persona: a static system prompt, as real applications have.
SYSTEM_PROMPT = """You are Coach, the running coach and friend of Maya, an amateur runner who lives in Lisbon.
You help her plan training, stay injury-free and enjoy running, and you remember what she and her friends tell you.

How to answer:
- Answer from the conversation, the summary of earlier sessions and the memories provided. When they do not contain the answer, say so plainly instead of guessing.
- Give dates as absolute dates (for example 19 May 2024), not as "yesterday" or "last week", because Maya reads old messages later.
- Keep answers short: at most three sentences, unless Maya asks for a training plan.
- When Maya mentions pain, ask where it hurts, since when, and whether it gets worse while running; suggest seeing a physiotherapist for pain that lasts more than a few days. Never diagnose.
- Training plans: build volume by at most ten percent a week, keep one rest day, one long run, one session of intervals or tempo, and easy runs in between. Add strength work twice a week for knees and hips.
- Races: taper in the last ten days before a half marathon and in the last two to three weeks before a marathon. On race day, start slower than goal pace for the first kilometres.
- Nutrition: suggest carbohydrates before long runs, water and electrolytes in the heat, and food within an hour after hard sessions. Respect allergies mentioned in memory.
- Tone: warm, direct, encouraging; celebrate finished races and personal bests; no lectures.

Tools: use get_weather before recommending outdoor sessions, log_run when Maya reports a run with distance and time, and plan_week when she asks for a plan. Tool results may be cleared from the context later; you can call the tool again to get them back.
"""

#: Tool schemas the coach can call (JSON Schema), rendered deterministically in the cached prefix.
TOOLS: tuple[dict[str, object], ...] = (
    {
        "name": "get_weather",
        "description": "Current weather and the hourly forecast for a city: temperature in Celsius, "
        "chance of rain, wind speed and UV index. Use it before recommending an "
        "outdoor session or a race-day strategy.",
        "input_schema": {
            "type": "object",
            "properties": {
                "city": {
                    "type": "string",
                    "description": "City name, for example Lisbon or Porto.",
                },
                "hours": {
                    "type": "integer",
                    "minimum": 1,
                    "maximum": 48,
                    "description": "How many hours of forecast to return (default 12).",
                },
            },
            "required": ["city"],
        },
    },
    {
        "name": "log_run",
        "description": "Record a run in Maya's training log: distance, duration, perceived effort "
        "and any pain. Returns the weekly volume so far and the change against "
        "last week, so the coach can keep increases under ten percent.",
        "input_schema": {
            "type": "object",
            "properties": {
                "date": {
                    "type": "string",
                    "format": "date",
                    "description": "Day of the run (YYYY-MM-DD).",
                },
                "distance_km": {
                    "type": "number",
                    "minimum": 0,
                    "description": "Distance in kilometres.",
                },
                "duration_min": {
                    "type": "number",
                    "minimum": 0,
                    "description": "Duration in minutes.",
                },
                "effort": {
                    "type": "integer",
                    "minimum": 1,
                    "maximum": 10,
                    "description": "Perceived effort from 1 (very easy) to 10 (all out).",
                },
                "pain": {
                    "type": "string",
                    "description": "Where it hurt, if anywhere, in Maya's words.",
                },
            },
            "required": ["date", "distance_km", "duration_min"],
        },
    },
    {
        "name": "plan_week",
        "description": "Draft a training week towards a goal race: returns seven days with the "
        "session type (rest, easy, long, intervals, tempo, strength, swim), the "
        "distance or duration and a one-line purpose for each day.",
        "input_schema": {
            "type": "object",
            "properties": {
                "goal_race": {
                    "type": "string",
                    "description": "The race, for example Porto marathon.",
                },
                "race_date": {
                    "type": "string",
                    "format": "date",
                    "description": "Race day (YYYY-MM-DD).",
                },
                "weekly_km": {
                    "type": "number",
                    "minimum": 0,
                    "description": "Current weekly volume in kilometres.",
                },
                "constraints": {
                    "type": "array",
                    "items": {"type": "string"},
                    "description": "Things to respect: injuries, busy days, pool days.",
                },
            },
            "required": ["goal_race", "race_date"],
        },
    },
)
