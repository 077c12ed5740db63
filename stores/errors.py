"""The project's one exception type for errors a user can cause."""


class AgencerdasError(Exception):
    """An error caused by input, configuration or environment, not by a bug.

    The message names the file or setting at fault and says what to do; the
    command-line interface prints it without a traceback and exits non-zero.
    """
