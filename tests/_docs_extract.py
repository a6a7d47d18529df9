"""Shared by the tests of the documentation (tests/test_docs_*.py): the Markdown files of the
repository and what is written in them (fenced blocks, inline code, shell commands)."""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

_FENCE = re.compile(r"^(\s*)(```+|~~~+)\s*([\w+-]*)")


def doc_files() -> list[Path]:
    """README.md and every Markdown file under docs/ (docs/figures/ holds generated tables, not prose)."""
    files = [ROOT / "README.md"] + sorted((ROOT / "docs").rglob("*.md"))
    return [f for f in files if f.exists() and "figures" not in f.relative_to(ROOT).parts]


def rel(path: Path) -> str:
    return str(path.relative_to(ROOT))


@dataclass
class Block:
    """A fenced code block: its language, first line of code (1-based), text, and the text just above it."""
    lang: str
    line: int
    text: str
    before: str


def fenced_blocks(text: str) -> list[Block]:
    blocks, lines, i = [], text.splitlines(), 0
    while i < len(lines):
        m = _FENCE.match(lines[i])
        if not m:
            i += 1
            continue
        fence, lang, start = m.group(2), m.group(3).lower(), i + 1
        before = next((ln for ln in reversed(lines[:i]) if ln.strip()), "")
        j = start
        while j < len(lines) and not lines[j].strip().startswith(fence[:3]):
            j += 1
        blocks.append(Block(lang, start + 1, "\n".join(lines[start:j]), before.strip()))
        i = j + 1
    return blocks


def prose(text: str) -> str:
    """The text with fenced blocks blanked out (line numbers kept)."""
    out, lines, i = [], text.splitlines(), 0
    while i < len(lines):
        m = _FENCE.match(lines[i])
        if not m:
            out.append(lines[i])
            i += 1
            continue
        fence = m.group(2)
        out.append("")
        i += 1
        while i < len(lines) and not lines[i].strip().startswith(fence[:3]):
            out.append("")
            i += 1
        if i < len(lines):
            out.append("")
            i += 1
    return "\n".join(out)


# ------------------------------------------------------------------ shell commands
_SHELL_LANGS = {"bash", "sh", "shell", "console", "zsh"}
_SEPARATORS = {"|", "||", "&&", ";", "&", "(", ")"}
_REDIRECT = re.compile(r"^\d*[<>]+&?$")
_ENV = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=")
_PREFIXES = {"nice", "nohup", "time", "env", "sudo", "exec"}


@dataclass
class Command:
    """One command of the docs: where it is written and its words (after the program)."""
    file: str
    line: int
    source: str
    program: str  # "kinetic", "benchmarks/<x>.py" or "-m <module>"
    args: list[str]

    def where(self) -> str:
        return f"{self.file}:{self.line}: {self.source.strip()}"


def split_shell(line: str) -> list[list[str]]:
    """A shell line as simple commands (split at pipes, &&, ;), comments, redirections and
    environment assignments removed."""
    lex = shlex.shlex(line, posix=True, punctuation_chars=True)
    lex.whitespace_split = True
    lex.commenters = "#"
    try:
        tokens = list(lex)
    except ValueError:  # an unbalanced quote in prose: take the plain words
        tokens = line.split()
    cmds, cur, skip = [], [], False
    for tok in tokens:
        if skip:
            skip = False
            continue
        if tok in _SEPARATORS:
            cmds.append(cur)
            cur = []
        elif _REDIRECT.match(tok):
            if cur and cur[-1].isdigit():
                cur.pop()
            skip = True
        else:
            cur.append(tok)
    cmds.append(cur)
    return [c for c in cmds if c]


def _program(words: list[str]) -> tuple[str, list[str]] | None:
    """Recognise ``kinetic ...``, ``python benchmarks/X.py ...`` and ``python -m kinetic.X ...``
    (after environment assignments, nice/nohup/time, or torchrun's ``--no-python``)."""
    w = list(words)
    while w and (_ENV.match(w[0]) or w[0] in _PREFIXES):
        if w.pop(0) == "nice" and w and w[0] == "-n":
            del w[:2]
    if not w:
        return None
    if w[0] == "torchrun" and "kinetic" in w:
        w = w[w.index("kinetic"):]
    if w[0] == "kinetic":
        return "kinetic", w[1:]
    if w[0] in ("python", "python3") and len(w) > 1:
        if w[1].startswith("benchmarks/") and w[1].endswith(".py"):
            return w[1], w[2:]
        if w[1] == "-m" and len(w) > 2 and w[2].startswith("kinetic"):
            return "-m " + w[2], w[3:]
    return None


def _commands_of(line: str, file: str, lineno: int, source: str) -> list[Command]:
    out = []
    for words in split_shell(line):
        found = _program(words)
        if found:
            out.append(Command(file, lineno, source, found[0], found[1]))
    return out


def _join_continuations(lines: list[tuple[int, str]]) -> list[tuple[int, str]]:
    out, buf, start = [], "", None
    for n, ln in lines:
        if start is None:
            start = n
        if ln.rstrip().endswith("\\"):
            buf += ln.rstrip()[:-1] + " "
            continue
        out.append((start, buf + ln))
        buf, start = "", None
    if buf:
        out.append((start, buf))
    return out


_INLINE = re.compile(r"(?<!`)`([^`]+)`(?!`)")
_CMD_START = re.compile(r"^\s*(\$\s+)?((\w+=\S+\s+)*)(kinetic(\s|$)|python3? (benchmarks/|-m kinetic))")


def commands(path: Path) -> list[Command]:
    """Every kinetic / benchmark command of a Markdown file: the lines of bash and sh blocks, the
    lines after ``$ `` of console blocks (and of any other block that has such lines), indented code
    lines and inline code spans."""
    text, file = path.read_text(encoding="utf-8"), rel(path)
    found: list[Command] = []
    for b in fenced_blocks(text):
        raw = list(enumerate(b.text.splitlines(), start=b.line))
        if b.lang not in _SHELL_LANGS and not any(ln.lstrip().startswith("$ ") for _, ln in raw):
            continue
        if b.lang == "console" or b.lang not in _SHELL_LANGS:
            kept, cont = [], False
            for n, ln in raw:
                s = ln.lstrip()
                if s.startswith("$ ") or cont:
                    kept.append((n, s[2:] if s.startswith("$ ") else ln))
                    cont = ln.rstrip().endswith("\\")
            raw = kept
        for n, ln in _join_continuations(raw):
            found += _commands_of(ln, file, n, ln)
    body = prose(text)
    # indented code (four spaces, in lists or not)
    lines = body.splitlines()
    indented = [(n, ln) for n, ln in enumerate(lines, start=1) if ln.startswith("    ") and _CMD_START.match(ln)]
    for n, ln in indented:
        full = ln
        k = n
        while full.rstrip().endswith("\\") and k < len(lines):
            full = full.rstrip()[:-1] + " " + lines[k]
            k += 1
        found += _commands_of(full, file, n, full)
    # inline code, which may run across a line break
    for m in _INLINE.finditer(body):
        code = " ".join(m.group(1).split())
        if _CMD_START.match(code):
            code = code[2:] if code.startswith("$ ") else code
            found += _commands_of(code, file, body.count("\n", 0, m.start()) + 1, m.group(1))
    return found
