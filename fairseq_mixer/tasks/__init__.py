"""Tasks of the plugin (fairseq's --user-dir imports this folder's modules)."""

from . import mixer  # noqa: F401
