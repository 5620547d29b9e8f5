"""Deterministic test doubles that implement contextos's protocols.

Ship with the package so applications can test against them too. Import them
from their modules (``contextos.testing.embedders``, ...).
"""
