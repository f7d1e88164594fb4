"""The measurements of scripts/bench.py, one module each, on one shared set-up (setup.py)."""
