"""The context engine: what goes into each request, and where.

- :mod:`.window`: the budget split across named segments, edge placement, breakpoint planning;
- :mod:`.session`: the durable turn log and the one context builder (``context_window``);
- :mod:`.conversation`: what a logged turn is for matching and display, and the
  conversation a log holds (cut replies and replaced answers left out);
- :mod:`.message_text`: the one rule for valid text (refused when logged, mended in replies);
- :mod:`.offload`: archiving the turns a compaction rotated out into long-term memory;
- :mod:`.compaction`: when and how the history shrinks;
- :mod:`.summarize`: the ``Summarizer`` protocol and the offline summarizer;
- :mod:`.topic`: retrieved memory inside the cached prefix, refreshed on measured drift;
- :mod:`.context`: the assembly step of a wrapped SDK call (session log + memory -> window).
"""
