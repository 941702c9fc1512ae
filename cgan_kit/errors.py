"""User errors: problems a user can fix, reported as one line each with exit code 2."""

from __future__ import annotations

from dataclasses import dataclass


class CganError(Exception):
    """A problem with the user's input: shown as one line, without a traceback."""

    exit_code = 2


def one_line(error: BaseException, limit: int = 300) -> str:
    """Another library's exception as a short line for a CganError: its type and message, whitespace folded."""
    return f"{type(error).__name__}: {' '.join(str(error).split())[:limit]}"


@dataclass(frozen=True)
class Problem:
    """One thing wrong in a recipe: the dotted path and what is wrong there."""

    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}" if self.path else self.message


class RecipeError(CganError):
    """Every problem found in a recipe, reported together."""

    def __init__(self, source: str, problems: list[Problem]):
        self.source = source
        self.problems = problems
        super().__init__("\n".join(self.lines()))

    def lines(self) -> list[str]:
        return [f"{self.source}: {problem}" for problem in self.problems]


class ArgumentError(CganError):
    """Component arguments that cannot work together (no download or file can fix them)."""
