"""Mixing time of VP/CLD/HOLD/langevin(k): KL of the full state to the prior; see kinetic/bench/mixing.py.

    python benchmarks/mixing.py [--full] [--out docs]

The renderers below write the summary tables of docs/study.md ("Mixing time of the forward process") from
docs/figures/mixing_results.json (benchmarks/_docs_tables.py); every number is in figures/mixing_tables.md.
"""
import re

from kinetic.bench.mixing import cli

ROWS = ("vp", "langevin1", "cld", "langevin2", "hold", "langevin3", "langevin4", "langevin5", "langevin6")
"""The SDEs of the tables, in order."""
DEFAULTS_ROWS = ("vp", "langevin1", "cld", "langevin2", "hold", "langevin3", "langevin6")
VP_BETA = (0.1, 20.0)
"""kn.vp()'s linear schedule beta(0) -> beta(1) (the JSON records VP's rate per tau only)."""
LABELS = {"time": "(a) time", "noise": "(b) noise", "noise_rel": "(b′) noise_rel", "spectral": "(c) spectral"}
PAIRS = (("hold/vp", "HOLD / VP"), ("hold/langevin1", "HOLD / OU"), ("hold/cld", "HOLD / CLD (order 3 vs 2)"),
         ("langevin6/langevin1", "langevin(6) / OU"))
VERDICT_EXCLUDES = "gaussians8"
"""The data set the verdict's ranges leave out (its mean and covariance are the prior's)."""


def _label(s: str) -> str:
    if s == "langevin1":
        return "langevin(1) = OU"
    return f"langevin({s[8:]})" if s.startswith("langevin") else s


def _f3(x: float) -> str:
    """Three decimals at most, trailing zeros dropped (0.125, 0.5, 1)."""
    return f"{x:.3f}".rstrip("0").rstrip(".")


def _exp(text: str) -> str:
    """An exponent without its leading zeros: 1.0e-05 -> 1.0e-5."""
    return re.sub(r"e([+-])0*(\d)", r"e\1\2", text)


def _tol(t: float) -> str:
    return _exp(f"{t:.0e}").replace("e+", "e")


def _x(r: float) -> str:
    return f"{r:.2f}" if r < 10 else f"{r:.1f}"


def _h(r: float) -> str:
    return f"{r:.2f}" if r < 10 else f"{r:.3g}"


def defaults_markdown(res: dict) -> str:
    """Each SDE's order, g², rate, preset beta and rate per t, P[k,k] and the constant beta' of (b), (b'), (c)."""
    lines = ["| SDE | k | g² | rate −max Re eig(A) per τ | preset β | preset rate per t | P[k,k] | β′ (b) | β′ (b′) | β′ (c) |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for s in (r for r in DEFAULTS_ROWS if r in res["sdes"]):
        i = res["sdes"][s]
        if i["rate_t_preset"] is None:  # VP: a linear schedule
            beta = f"linear {VP_BETA[0]:g}→{VP_BETA[1]:g}"
            rate = f"{i['rate_tau'] * VP_BETA[0]:g}→{i['rate_tau'] * VP_BETA[1]:g}"
        else:
            beta, rate = f"{i['rate_t_preset'] / i['rate_tau']:.3g}", f"{i['rate_t_preset']:.3g}"
        lines.append(f"| {_label(s)} | {i['order']} | {i['g2']:.4g} | {i['rate_tau']:.4g} | {beta} | {rate} | "
                     f"{i['P_kk']:.3g} | {_f3(i['beta_noise'])} | {_f3(i['beta_noise_rel'])} | {_f3(i['beta_spectral'])} |")
    return "\n".join(lines)


def tolerance_markdown(res: dict, data: str = "digits64") -> str:
    """On one data set: the KL at the preset's T and, per normalisation, t* at each tolerance with its ratio to
    OU = langevin(1) (one ratio when both tolerances give the same); HOLD in bold."""
    tols = [str(t) for t in res["tolerances"]]
    lines = ["| SDE | k | KL at t = T = 1, (a) | " + " | ".join(LABELS.values()) + " |", "|---|---|---" + "|---" * 4 + "|"]
    for s in (r for r in ROWS if r in res["sdes"]):
        cells = []
        for how in LABELS:
            t = " / ".join(f"{res['t_star'][data][s][how][tol]:.3g}" for tol in tols)
            xs = [f"×{_x(res['ratios'][data][how][s][tol]['vs_ou'])}" for tol in tols]
            cells.append(f"{t} ({' / '.join(dict.fromkeys(xs))})")
        kl = _exp(f"{res['kl_at_T'][data][s]:.1e}")
        name = f"**{s}**" if s == "hold" else _label(s)
        lines.append(f"| {name} | {res['sdes'][s]['order']} | {kl} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def headline_markdown(res: dict, data: str = "digits64") -> str:
    """Per normalisation and tolerance, each pair's ratio of tolerance times: the range over the data sets,
    then ``data``'s value in brackets."""
    rows = {(h["normalisation"], h["tol"], h["pair"]): h for h in res["headline"]}
    lines = ["| normalisation | tol | " + " | ".join(label for _, label in PAIRS) + " |", "|---|---|" + "---|" * len(PAIRS)]
    for how, label in LABELS.items():
        for tol in res["tolerances"]:
            cells = [rows[(how, tol, pair)] for pair, _ in PAIRS]
            lines.append(f"| {label} | {_tol(tol)} | " + " | ".join(
                f"{_h(h['min'])}–{_h(h['max'])} ({_h(h['per_dataset'][data])})" for h in cells) + " |")
    return "\n".join(lines)


def _range(res: dict, how: str, pair: str) -> tuple[float, float]:
    v = [x for h in res["headline"] if (h["normalisation"], h["pair"]) == (how, pair)
         for d, x in h["per_dataset"].items() if d != VERDICT_EXCLUDES]
    return min(v), max(v)


def _verdict_cell(lo: float, hi: float, what: str = "") -> str:
    what = f" {what}" if what else ""
    if hi < 1:
        return f"×{lo:.2f}–{hi:.2f}{what} ({1 / hi:.1f}–{1 / lo:.1f}× faster)"
    if lo > 1:
        return f"{lo:.2f}–{hi:.2f}× slower{what}"
    return f"×{lo:.2f}–{hi:.2f}{what}"


def verdict_markdown(res: dict) -> str:
    """HOLD against VP/OU and against CLD per normalisation: the range of the ratio of tolerance times over
    both tolerances and every data set but VERDICT_EXCLUDES."""
    lines = ["| normalisation | HOLD vs VP/OU | HOLD vs CLD |", "|---|---|---|"]
    labels = {"time": "(a) presets' time scale", "noise": "(b) equal noise", "noise_rel": "(b′) equal relative noise",
              "spectral": "(c) equal spectral abscissa"}
    for how, label in labels.items():
        vp, ou, cld = (_range(res, how, p) for p in ("hold/vp", "hold/langevin1", "hold/cld"))
        if how == "time":  # VP and OU are different processes on the presets' clocks
            first = f"{_verdict_cell(*vp, 'vs VP')}; {_verdict_cell(*ou, 'vs OU at β = 8')}"
        else:  # the same process under (b), (b') and (c)
            first = _verdict_cell(min(vp[0], ou[0]), max(vp[1], ou[1]))
        lines.append(f"| {label} | {first} | {_verdict_cell(*cld)} |")
    return "\n".join(lines)


if __name__ == "__main__":
    cli()
