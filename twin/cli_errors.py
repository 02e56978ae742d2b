"""How every ``xrm-twin`` command ends on an exception: one message, the contract's exit code.

Exit codes (``../shared/DESIGN.md``): 2 for bad input (:class:`~twin.errors.XrmInputError`:
a wrong key, unit, material or file, named with the allowed values), 1 for any other failure,
with the traceback only under ``--verbose``. ``typer.Exit`` and ``KeyboardInterrupt`` pass
through unchanged.
"""

from __future__ import annotations

from typing import NoReturn

import typer
from rich.console import Console
from rich.markup import escape

from twin.errors import XrmInputError

console = Console(stderr=True)


def exit_on_error(exc: BaseException, *, verbose: bool = False) -> NoReturn:
    """Print ``exc`` as one line (``error:`` or ``failed:``) and exit with 2 or 1."""
    if isinstance(exc, XrmInputError):
        console.print(f"[bold red]error:[/] {escape(str(exc))}")  # [source] is text, not markup
        raise typer.Exit(2)
    if isinstance(exc, (typer.Exit, KeyboardInterrupt)):
        raise exc
    if verbose:
        console.print_exception()
    else:
        console.print(f"[bold red]failed:[/] {type(exc).__name__}: {escape(str(exc))}")
    raise typer.Exit(1)
