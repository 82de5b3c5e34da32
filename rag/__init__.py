"""rag: answers to questions about Vietnamese university regulations, with citations.

Stages, one module each: load → normalise → chunk → embed → index → retrieve →
prompt → generate → pipeline. Nothing heavy happens at import.
"""

__version__ = "0.1.0"
