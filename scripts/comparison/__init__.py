"""The paper's comparison on our data: XENT, DAD, E2E and MIXER from one XENT start, with a
tuning phase on validation, several seeds, and significance tests (scripts/grid.py)."""
