"""The exception kdefect raises for bad user input (files, sizes, options).

The CLI prints its message as one line and exits with code 2; library users
can catch it as a ``ValueError``.
"""


class InputError(ValueError):
    """Bad input from the user: a missing file, a wrong size, an unknown option value.

    The message names the file or value and what was expected.

    Example:
    >>> try:
    ...     raise InputError("data directory /nope does not exist")
    ... except ValueError as err:
    ...     print(err)
    data directory /nope does not exist
    """
