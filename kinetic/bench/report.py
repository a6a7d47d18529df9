"""What every benchmark shares: the machine description, the command line, and writing its outputs.

    p = bench_parser("Training throughput ...", full_help="...", out_help="...")
    args = parse(p, argv)                      # also sets torch's thread count (--threads)
    write_outputs(args.out, {"figures/x.json": res, "benchmarks_x.md": to_markdown(res)})
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
from pathlib import Path
from typing import Sequence

import torch

from ..fileio import atomic_write_text

__all__ = ["machine_info", "machine_line", "bench_parser", "parse", "int_list", "standard_cli", "command_line",
           "write_outputs", "replace_section", "md_table"]


def machine_info() -> dict:
    """CPU model, logical CPUs, torch version and threads, Python and platform (plain data)."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return {
        "cpu": cpu,
        "processor": platform.processor() or platform.machine(),
        "logical_cpus": os.cpu_count(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "platform": platform.platform(),
    }


def machine_line(info: dict | None = None) -> str:
    """One line for a report: "<cpu>, <n> logical CPUs, torch <v> with <t> thread(s), Python <v>"."""
    m = info or machine_info()
    return (f"{m['cpu']}, {m['logical_cpus']} logical CPUs, torch {m['torch']} with {m['threads']} thread(s), "
            f"Python {m['python']}")


def bench_parser(description: str, *, full_help: str, out_default: str | None = "docs",
                 out_help: str = "output directory") -> argparse.ArgumentParser:
    """An ArgumentParser with the options every benchmark has: --full, --out, --threads."""
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--full", action="store_true", help=full_help)
    p.add_argument("--out", default=out_default, help=out_help)
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    return p


def parse(p: argparse.ArgumentParser, argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Parse the arguments and apply --threads (>= 1) to torch."""
    a = p.parse_args(argv)
    if a.threads < 1:
        p.error(f"--threads must be >= 1, got {a.threads}")
    torch.set_num_threads(a.threads)
    return a


def int_list(text: str) -> list[int]:
    """An argparse ``type``: "5,8,10" -> [5, 8, 10]; anything else is the option's one-line error."""
    try:
        return [int(x) for x in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"comma-separated integers expected, got {text!r}") from None


def standard_cli(argv, main, to_markdown, *, description: str, full_help: str, out_help: str, tag: str) -> dict:
    """The CLI of a benchmark whose ``main(full, out_dir, progress)`` returns a result for ``to_markdown``:
    --full/--out/--threads, progress lines "[tag] ...", the tables printed at the end."""
    a = parse(bench_parser(description, full_help=full_help, out_help=out_help), argv)
    res = main(a.full, a.out, progress=lambda s: print(f"[{tag}] {s}", flush=True))
    print(to_markdown(res))
    return res


def md_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    """A Markdown table as lines: ``| h1 | h2 |``, ``|---|---|``, then one line per row."""
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)] + ["| " + " | ".join(r) + " |" for r in rows]


def bold_min(vals: Sequence[float], fmt: str = ".2f") -> list[str]:
    """The values formatted with ``fmt``, every one equal to the smallest in bold (the tables' "best")."""
    best = min(vals)
    return [f"**{v:{fmt}}**" if v == best else f"{v:{fmt}}" for v in vals]


def command_line(script: str, argv: Sequence[str] | None = None) -> str:
    """The command as the user typed it: "python benchmarks/<script> <args>" (for the reports)."""
    args = list(sys.argv[1:] if argv is None else argv)
    return " ".join(["python", f"benchmarks/{script}", *args])


def write_outputs(out_dir: str | os.PathLike[str], files: dict) -> list[Path]:
    """Write each ``relative path -> text (str) or JSON-able object`` under out_dir, atomically."""
    written = []
    for rel, content in files.items():
        text = content if isinstance(content, str) else json.dumps(content, indent=1)
        written.append(atomic_write_text(Path(out_dir) / rel, text))
    return written


def replace_section(path: str | os.PathLike[str], name: str, text: str, *, title: str | None = None) -> Path:
    """Replace the text between ``<!-- NAME:begin -->`` and ``<!-- NAME:end -->`` in a Markdown
    file with ``text``; when the markers are missing, append them (after ``title``, a heading)."""
    path = Path(path)
    begin, end = f"<!-- {name}:begin -->", f"<!-- {name}:end -->"
    old = path.read_text(encoding="utf-8") if path.exists() else ""
    block = f"{begin}\n{text.rstrip()}\n{end}"
    if begin in old and end in old and old.index(begin) < old.index(end):
        new = old[: old.index(begin)] + block + old[old.index(end) + len(end):]
    else:
        new = old.rstrip() + ("\n\n" if old else "") + (f"{title}\n\n" if title else "") + block + "\n"
    return atomic_write_text(path, new)
