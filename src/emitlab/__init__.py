"""emitlab: multilabel emotion detection for Italian social-media text (EMit, EVALITA 2023)."""

__version__ = "0.1.0"
