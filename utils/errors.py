"""The exceptions bad input raises; the command-line layer turns them into one line and exit 2."""


class UserError(Exception):
    """Bad input from the user: the message says what was wrong and what to do.

    Entry scripts catch it, print ``error: <message>`` on one line to stderr and exit 2,
    so a researcher never sees a traceback for a typo.
    """


class ParameterError(UserError, ValueError):
    """A parameter's value is out of its domain. Raised by library code, which names the parameter
    (``blend_alpha must be in (0, 1], got 2``); the command-line layer words it as its flag
    (``--blend_alpha must be …``), so the library never has to know how it was called."""

    def __init__(self, parameter: str, problem: str):
        super().__init__(f"{parameter} {problem}")
        self.parameter, self.problem = parameter, problem

    def renamed(self, parameter: str) -> "ParameterError":
        return ParameterError(parameter, self.problem)


def unknown_name(kind: str, name: str, known) -> UserError:
    """The error every registry raises for a name it does not know."""
    return UserError(f"unknown {kind} '{name}'; choose one of: {', '.join(sorted(known))}")
