"""Long-term memory: the Memory facade, ingestion, retrieval and background embedding."""

from .api import Memory
from .retrieval import HybridRetriever, RetrievalConfig

__all__ = ["HybridRetriever", "Memory", "RetrievalConfig"]
