"""fairseq-train, except that every rank writes its checkpoints (to its own --save-dir).

Only rank 0 saves in fairseq; the distributed test needs every rank's parameters to show
that they agree.
"""

from fairseq.trainer import Trainer
from fairseq_cli.train import cli_main

Trainer.should_save_checkpoint_on_current_rank = property(lambda self: True)

if __name__ == "__main__":
    cli_main()
