"""Solver accuracy benchmark (see kinetic/bench/solvers.py and docs/benchmarks_solvers.md).

    python benchmarks/solver_accuracy.py [--full] [--out-dir docs] [--no-overhead]
"""

from kinetic.bench.solvers import cli

if __name__ == "__main__":
    cli()
