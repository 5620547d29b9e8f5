"""Language models: the ``LLM`` seam, the model registry, token counting, prompts, SDK clients.

- :mod:`.protocol`: the ``LLM`` protocol every optional LLM feature depends on, ``BaseLLM``
  (an ``LLM`` written as ``reply(LLMCall)``) and reply parsing;
- :mod:`.models`: the model registry (window, output, minimum cacheable prefix, prices);
- :mod:`.tokens`: offline token counting;
- :mod:`.prompts`: the prompts of the LLM-backed extractor and reconciler;
- :mod:`.clients`: ``LLM`` implementations on the official Anthropic and OpenAI SDKs.
"""

from .protocol import LLM, BaseLLM, LLMCall, parse_json_reply, schema_errors

__all__ = ["LLM", "BaseLLM", "LLMCall", "parse_json_reply", "schema_errors"]
