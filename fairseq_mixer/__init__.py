"""fairseq-mixer: MIXER (Ranzato et al., ICLR 2016) as a fairseq plugin.

Importing the package registers its criterion and task with fairseq and makes fairseq
checkpoints loadable with torch's safe loading; `--user-dir fairseq_mixer` does the import.
"""

from fairseq_mixer import checkpoint_compat, criterions, models, tasks  # noqa: F401
