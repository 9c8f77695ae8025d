"""The errors a command can end in. Adapters map each class to one status code."""


class ShoalError(Exception):
    """Base of every error the domain raises on purpose."""


class NotFound(ShoalError):
    """The thing named does not exist (or was deleted)."""


class Conflict(ShoalError):
    """The command clashes with the current state: a taken name, a stale version."""


class InvalidTransition(ShoalError):
    """The aggregate cannot go from its current state to the one asked for."""


class Rejected(ShoalError):
    """The command's input breaks a rule (unknown pool, bad value)."""
