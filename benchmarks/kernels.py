"""Perturbation and k x k kernel cost; see kinetic/bench/kernels.py.  python benchmarks/kernels.py [--full]"""
import argparse

import torch

from kinetic.bench.kernels import main, to_markdown

if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--full", action="store_true")
    p.add_argument("--out", default=None, help="directory for bench_kernels.{json,md}")
    p.add_argument("--threads", type=int, default=1)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    print(to_markdown(main(a.full, a.out)))
