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


def describe_os_error(error: OSError) -> str:
    """One line for a filesystem error: what failed, on which path, and what to do about it."""
    import errno

    where = f" ({error.filename})" if error.filename else ""
    what = error.strerror or str(error)
    advice = {errno.ENOSPC: "free space on that filesystem or choose another --out_dir, then run the same command "
                            "again",
              errno.EDQUOT: "free space within your quota or choose another --out_dir, then run the same command again",
              errno.EFBIG: "the file outgrew a size limit (ulimit -f); raise it or choose another --out_dir",
              errno.EACCES: "make it writable for you or choose another directory",
              errno.EPERM: "make it writable for you or choose another directory",
              errno.EROFS: "the filesystem is read-only; choose another directory",
              errno.ENOTDIR: "a file stands where a directory is needed; move it or choose another path",
              errno.EISDIR: "a directory stands where a file is needed; move it or choose another path",
              errno.ENOENT: "check the path",
              errno.ESTALE: "the network filesystem lost the file; run the same command again"}
    return f"{what}{where}: {advice.get(error.errno, 'check the path and the filesystem, then run it again')}"
