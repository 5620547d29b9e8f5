"""Agent-facing memory: Anthropic's memory tool and self-editing (MemGPT-style) memory."""
