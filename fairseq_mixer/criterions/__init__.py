"""Criterions of the plugin; importing the package registers them with fairseq."""

from . import dad, e2e, mixer  # noqa: F401
