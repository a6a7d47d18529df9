"""Few-step sampling on VP against diffusers' DPM-Solver++, UniPC and DEIS with the same exact score;
see kinetic/bench/peers.py. Needs diffusers (`pip install -e .[diffusers]`); downloads nothing.

    python benchmarks/peer_samplers.py [--full] [--out docs]
"""
from kinetic.bench.peers import cli

if __name__ == "__main__":
    cli()
