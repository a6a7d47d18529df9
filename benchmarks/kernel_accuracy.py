"""Accuracy of the exact kernels for langevin(k), k = 1..MAX_ORDER; see kinetic/bench/kernel_accuracy.py.

    python benchmarks/kernel_accuracy.py [--orders 1 2 ... 16] [--out docs/figures]
"""
from kinetic.bench.kernel_accuracy import cli

if __name__ == "__main__":
    cli()
