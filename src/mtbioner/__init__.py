"""mtbioner: multi-task biomedical named-entity recognition (MT-BioNER)."""

from __future__ import annotations

__version__ = "0.1.0"
