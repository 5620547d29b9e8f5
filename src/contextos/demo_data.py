"""A small multi-session conversation written for the demo (not LoCoMo).

Two friends, Maya and Theo, over three sessions in spring 2024: enough
facts, dates, an image and a change of mind to show retrieval, extraction,
compaction and caching at work.
"""

from __future__ import annotations

SPEAKERS = ("Maya", "Theo")

SESSIONS: tuple[tuple[str, tuple[tuple[str, str], ...]], ...] = (
    ("2024-03-02T18:30:00+00:00", (
        ("Maya", "Hey Theo! I finally signed up for the Lisbon half marathon in May."),
        ("Theo", "That's huge! How is the training going so far?"),
        ("Maya", "Slowly. I ran 12 kilometres yesterday along the river and my left knee hurt."),
        ("Theo", "You should see a physio about that knee before it gets worse."),
        ("Maya", "Good idea. My sister Ines is a physiotherapist in Porto, I'll call her."),
        ("Theo", "By the way, I adopted a dog last week! Her name is Pimenta."),
        ("Maya", "No way! What breed is she?"),
        ("Theo", "A three-year-old Portuguese water dog from the shelter in Setubal."),
        ("Maya", "I'm allergic to most dogs, but water dogs are supposed to be hypoallergenic."),
        ("Theo", "Then you can come over and meet her. She loves the beach."),
    )),
    ("2024-04-14T10:05:00+00:00", (
        ("Theo", "How was the call with Ines about your knee?"),
        ("Maya", "She said it's runner's knee and gave me strengthening exercises. No running for two weeks."),
        ("Theo", "Two weeks off is annoying but better than missing the race."),
        ("Maya", "Exactly. Meanwhile I started swimming at the municipal pool on Tuesdays and Thursdays."),
        ("Theo", "Pimenta would love that pool. Look at her at the beach this morning!"),
        ("Maya", "Adorable! Is she always that sandy?"),
        ("Theo", "Always. Also, I got the job at the architecture studio in Lisbon, I start on 1 June."),
        ("Maya", "Congratulations! So you're moving from Coimbra to Lisbon?"),
        ("Theo", "Yes, I'm looking for a flat in Alfama with a small garden for Pimenta."),
        ("Maya", "Please always remind me to stretch after runs, I keep forgetting."),
    )),
    ("2024-05-20T19:45:00+00:00", (
        ("Maya", "I did it! I finished the half marathon yesterday in 1 hour 58 minutes."),
        ("Theo", "Under two hours! The knee held up?"),
        ("Maya", "It did, thanks to Ines's exercises and the swimming."),
        ("Theo", "Change of plans on my side: I found a flat in Graca, not Alfama. It has a terrace."),
        ("Maya", "Graca is lovely. Does Pimenta like the terrace?"),
        ("Theo", "She sleeps there all afternoon. The move is next Saturday."),
        ("Maya", "I can help you move on Saturday, I'll bring my car."),
        ("Theo", "You're the best. I'll make my grandmother's bacalhau as a thank you."),
        ("Maya", "Deal. Next goal for me is the Porto marathon in November."),
        ("Theo", "A full marathon! Ines will be happy you're coming to Porto."),
    )),
)

#: Questions the demo asks of the memory.
QUESTIONS: tuple[str, ...] = (
    "Where is Theo's new flat?",
    "What did Ines say about Maya's knee?",
    "What is the name and breed of Theo's dog?",
    "What was Maya's half marathon time?",
)

#: An image caption attached to one turn, as a vision model would describe it.
CAPTIONS = {"Pimenta would love that pool. Look at her at the beach this morning!":
            "a photo of a curly black dog running on a sandy beach"}
