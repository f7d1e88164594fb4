"""Models of the plugin (fairseq's --user-dir imports this folder's modules)."""

from . import paper_lstm  # noqa: F401
