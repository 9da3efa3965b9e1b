"""User-facing errors: one line that names the problem and the fix, exit status 2."""

import sys


class UserError(Exception):
    """Bad input from the user (config, data, results). Printed as one line, exit status 2."""

    exit_code = 2


class ConfigError(UserError):
    """A config value is out of range, of the wrong type, or names something unknown."""


class DataError(UserError):
    """A corpus, cache or token file is missing, empty, corrupt or too small."""


class ResultsError(UserError):
    """Run records that cannot be read or must not be mixed in one analysis."""


def exit_with(err: UserError) -> None:
    """Print `err` as a single line on stderr and exit with its status, no traceback."""
    message = " ".join(str(err).split())  # one line, whatever the message held
    print(f"error: {message}", file=sys.stderr, flush=True)
    sys.exit(err.exit_code)
