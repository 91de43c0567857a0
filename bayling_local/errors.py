"""Typed errors a person can act on.

Library code raises these; the CLI entry (`bayling_local.cli.main`) prints their message as one line on
stderr and exits with `exit_code`. Every message names the fix where one exists.
"""

from __future__ import annotations


class BaylingError(Exception):
    """Base of every error that is shown to the user as one line."""

    exit_code = 1


class UsageError(BaylingError):
    """The command line or its input is wrong (exit code 2)."""

    exit_code = 2


class UnknownLanguageError(UsageError):
    """A language name, code or alias that no FLORES-200 language answers to."""


class UnknownChatFormatError(UsageError):
    """A chat format id that is not one of the known formats."""


class InputTextError(UsageError):
    """Text input that cannot be used: empty, or not UTF-8."""


class ModelNotFoundError(BaylingError):
    """A model name that is neither in the store nor the catalog, or a path that does not exist."""


class InvalidModelFileError(BaylingError):
    """A model artifact that is corrupt, truncated, of another format, or of an unsupported architecture."""


class StoreError(BaylingError):
    """The model store cannot do what was asked (bad name, existing entry, disk full)."""


class OfflineError(BaylingError):
    """The network (the Hugging Face hub) is needed and cannot be reached."""


class BackendUnavailableError(BaylingError):
    """A backend or device that this install cannot use; the message says what to install."""


class ContextOverflowError(BaylingError):
    """An input longer than the model's context window."""


class TemplateError(BaylingError):
    """A chat template that fails to render in the sandbox."""


class BundleError(BaylingError):
    """An offline bundle that cannot be built for its target, or that fails verification on install."""
