"""Long-term memory: the Memory facade, ingestion, retrieval and background embedding."""

from .api import Memory
from .retrieval import FACT_RETRIEVAL, TURN_FACTS_RETRIEVAL, HybridRetriever, RetrievalConfig

__all__ = [
    "FACT_RETRIEVAL",
    "TURN_FACTS_RETRIEVAL",
    "HybridRetriever",
    "Memory",
    "RetrievalConfig",
]
