"""The CLI's Rich consoles, with markup off: a user's string (a path, a config key, an error
message quoting a value) is printed as it is, never read as Rich markup (``--out 'a[/]b.npz'``
raised MarkupError, ``'x[bold]y.npz'`` was shown as "xy.npz"). kinetic's own styles go through
`styled`, which escapes every value it inserts."""

from __future__ import annotations

from rich.console import Console
from rich.markup import escape
from rich.text import Text

__all__ = ["console", "err_console", "styled", "escape"]

console = Console(markup=False)
err_console = Console(stderr=True, markup=False)


def styled(template: str, *values: object) -> Text:
    """``template`` (kinetic's own Rich markup, ``{}`` fields) with ``values`` escaped into it:
    ``styled("[bold red]Error:[/] {}", message)``."""
    return Text.from_markup(template.format(*(escape(str(v)) for v in values)))


def one_line_warnings() -> None:
    """Show the library's warnings (an unwritable cache, ...) as one ``warning: ...`` line on
    stderr, not Python's two lines of file, line number and source."""
    import warnings

    def show(message, category, filename, lineno, file=None, line=None):
        err_console.print(styled("[yellow]warning:[/] {}", " ".join(str(message).split())), highlight=False,
                          soft_wrap=True)

    warnings.showwarning = show
