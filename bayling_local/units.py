"""Quantities shown to a person (sizes), formatted the same way by the CLI and the TUI."""

from __future__ import annotations


def human_size(size: int) -> str:
    """Bytes in decimal units, as disks and model cards count them: `1.2 GB`."""
    value = float(size)
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if value < 1000 or unit == "TB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    return f"{size} B"
