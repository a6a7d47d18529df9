"""Sample quality of VP, CLD, HOLD, langevin(4) under one equal training budget; see kinetic/bench/quality.py.

    python benchmarks/quality.py --full --out docs
"""
from kinetic.bench.quality import cli

if __name__ == "__main__":
    cli()
