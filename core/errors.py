"""Errors that name the file (or star) and the problem, for users and for the UI."""

from __future__ import annotations

import os


class StellarscopeError(Exception):
    """Base class: every message is meant to be shown to a user as is."""


class BadFileError(StellarscopeError, ValueError):
    """A file could not be read: it names the file and what is wrong with it."""

    def __init__(self, path, problem: str):
        self.path = os.fspath(path) if path is not None else "<memory>"
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")


class BadDataError(StellarscopeError, ValueError):
    """Arrays with the wrong shape, NaN/inf where values are required, and similar."""


class UnknownStarError(StellarscopeError, KeyError):
    """An APOGEE_ID (or row) that the store does not hold."""

    def __init__(self, star, where: str = ""):
        self.star = star
        self.where = where
        super().__init__(star)

    def __str__(self) -> str:
        place = f" in {self.where}" if self.where else ""
        return f"unknown star {self.star!r}{place}"


class StoreError(StellarscopeError):
    """A store on disk is missing, incomplete or inconsistent."""
