"""Sample quality of VP, CLD, HOLD, langevin(4) under one equal training budget; see kinetic/bench/quality.py.

    python benchmarks/quality.py --full --out docs
"""
import argparse
from pathlib import Path

import torch

from kinetic.bench.quality import OBJECTIVES, run, to_markdown

if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--full", action="store_true", help="3 seeds, 4000 steps, n=1000, NFE up to 1000")
    p.add_argument("--out", default="docs")
    p.add_argument("--runs", default="runs/quality")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--objective", default="x0-uniform", choices=sorted(OBJECTIVES))
    p.add_argument("--seeds", type=int, nargs="+", default=None)
    p.add_argument("--nfes", type=int, nargs="+", default=None)
    p.add_argument("--datasets", nargs="+", default=["digits", "moons"])
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    r = run(a.full, a.out, a.runs, log=lambda *x: print(*x, flush=True), objective=a.objective, seeds=a.seeds,
            nfes=a.nfes, datasets=a.datasets)
    Path(a.out, f"quality_tables_{a.objective}.md").write_text(to_markdown(r))
    print(to_markdown(r))
