"""When a progress bar is drawn."""


def bar_disabled(progress: bool):
    """tqdm's ``disable`` for a bar the user asked for (``progress``): drawn on a terminal only (tqdm's
    None). A log file or a pipe gets no bar, so an error that follows it stays one line."""
    return None if progress else True
