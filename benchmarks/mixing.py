"""Mixing time of VP/CLD/HOLD/langevin(k): KL of the full state to the prior; see kinetic/bench/mixing.py.

    python benchmarks/mixing.py [--full] [--out docs]
"""
from kinetic.bench.mixing import cli

if __name__ == "__main__":
    cli()
