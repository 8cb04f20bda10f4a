"""The one exception type the entry scripts turn into a one-line message and a non-zero exit."""


class UserError(Exception):
    """Bad input from the user: the message says what was wrong and what to do.

    Entry scripts catch it, print ``error: <message>`` on one line to stderr and exit 2,
    so a researcher never sees a traceback for a typo.
    """


def unknown_name(kind: str, name: str, known) -> UserError:
    """The error every registry raises for a name it does not know."""
    return UserError(f"unknown {kind} '{name}'; choose one of: {', '.join(sorted(known))}")
