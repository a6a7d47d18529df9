"""Perturbation and k x k kernel cost; see kinetic/bench/kernels.py.  python benchmarks/kernels.py [--full]"""
from kinetic.bench.kernels import cli

if __name__ == "__main__":
    cli()
