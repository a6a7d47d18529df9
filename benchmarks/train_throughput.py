"""Training throughput on CPU (examples/s): VP vs HOLD, small U-Net, 8x8 digits; see kinetic/bench/train.py.

    python benchmarks/train_throughput.py [--full] [--out docs] [--threads 1]
"""
from kinetic.bench.train import cli

if __name__ == "__main__":
    cli()
