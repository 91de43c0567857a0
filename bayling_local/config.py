"""User settings from `$BAYLING_HOME/config.toml` (for example `model = "bayling-3-8b"`).

Keys: `model`, `device`, `threads`, `context`, `huge_pages` (true or false).
Environment variables and command-line options win.
"""

from __future__ import annotations

import sys
from typing import Any

from bayling_local.errors import UsageError

KNOWN_KEYS = frozenset({"model", "device", "threads", "context", "huge_pages"})
SWITCHES = ("huge_pages",)
"""Keys that take true or false."""


def config_path():
    from bayling_local.store import bayling_home

    return bayling_home() / "config.toml"


def load_config() -> dict[str, Any]:
    """The config file's settings, or {} when there is none; unknown keys are refused."""
    path = config_path()
    if not path.is_file():
        return {}
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover - Python 3.10
        import tomli as tomllib
    try:
        data = tomllib.loads(path.read_text("utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as error:
        raise UsageError(f"{path} is not valid TOML: {error}") from error
    unknown = set(data) - KNOWN_KEYS
    if unknown:
        raise UsageError(f"{path}: unknown setting(s) {', '.join(sorted(unknown))}; known: {', '.join(sorted(KNOWN_KEYS))}")
    for key in SWITCHES:
        if not isinstance(data.get(key, True), bool):
            raise UsageError(f"{path}: {key} must be true or false, not {data[key]!r}")
    return data
