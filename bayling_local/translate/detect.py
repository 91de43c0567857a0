"""`--from auto`: the source language of a file, told by an offline detector (py3langid).

The detector's ISO 639-1 answer goes through the same resolver as a typed name, so `sw` becomes
swh_Latn and `zh` zho_Hans.
"""

from __future__ import annotations

from collections.abc import Iterable

from bayling_local.errors import BackendUnavailableError, UnknownLanguageError
from bayling_local.languages import Language, resolve

SAMPLE_CHARS = 4000
"""How much text the detector reads: plenty for one language, fast on a long file."""
INSTALL_HINT = (
    "--from auto needs a language detector: pip install 'bayling-local[detect]' (py3langid), "
    "or name the source language with --from"
)


def detect_language(texts: Iterable[str]) -> Language:
    """The language most of `texts` (read up to SAMPLE_CHARS) is written in."""
    try:
        import py3langid
    except ImportError:
        raise BackendUnavailableError(INSTALL_HINT) from None
    sample = _sample(texts)
    if not sample.strip():
        raise UnknownLanguageError("--from auto found no text to detect a language from; name it with --from")
    code, _ = py3langid.classify(sample)
    try:
        return resolve(code)
    except UnknownLanguageError:
        raise UnknownLanguageError(
            f"the detector says the input is {code!r}, which is not a FLORES-200 language; name the source with --from"
        ) from None


def _sample(texts: Iterable[str]) -> str:
    parts, size = [], 0
    for text in texts:
        parts.append(text)
        size += len(text) + 1
        if size >= SAMPLE_CHARS:
            break
    return "\n".join(parts)[:SAMPLE_CHARS]
