"""Plain-text tables for the command line: one formatter for every table the package prints."""

from __future__ import annotations

from typing import Sequence


def text_table(rows: Sequence[Sequence[str]], left: int = 1) -> str:
    """``rows`` (the header first) as columns two spaces apart: the first ``left`` columns
    left-aligned (names), the rest right-aligned (numbers); no trailing blanks."""
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(v.ljust(w) if i < left else v.rjust(w)
                               for i, (v, w) in enumerate(zip(r, widths))).rstrip()
                     for r in rows)
