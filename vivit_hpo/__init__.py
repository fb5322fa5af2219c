"""vivit-hpo: hyperparameter search for ViViT encoding models of visual neurons."""

from __future__ import annotations

__version__ = "0.1.0"
__all__ = ["__version__"]
