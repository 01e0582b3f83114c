"""Errors a user can cause, reported as one clear line instead of a traceback."""

from __future__ import annotations


class FxflowError(Exception):
    """Base class of every error fxflow raises on purpose."""


class UserError(FxflowError):
    """A mistake in user input (YAML, overrides, params): reported without a traceback.

    ``file``/``line`` locate the mistake in a source file; ``path`` is the dotted path
    inside the document (``services.data-bridge.replicas``).
    """

    def __init__(
        self,
        message: str,
        *,
        file: str | None = None,
        line: int | None = None,
        path: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.file = file
        self.line = line
        self.path = path

    def location(self) -> str:
        where = self.file or ""
        if where and self.line:
            where = f"{where}:{self.line}"
        return where

    def __str__(self) -> str:
        parts = [p for p in (self.location(), self.path) if p]
        prefix = ": ".join(parts)
        return f"{prefix}: {self.message}" if prefix else self.message


class UserErrors(UserError):
    """Several user mistakes found at once (all are reported, not just the first)."""

    def __init__(self, errors: list[UserError]) -> None:
        super().__init__("\n".join(str(e) for e in errors))
        self.errors = errors

    def __str__(self) -> str:
        return "\n".join(str(e) for e in self.errors)
