"""Criterions of the plugin; importing the package registers them with fairseq."""

from . import mixer  # noqa: F401
