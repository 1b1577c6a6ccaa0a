"""The one error type for mistakes a user can make.

Library code raises :class:`UserError` for bad paths, bad values, budgets too small and the
like; the CLI turns it into a one-paragraph message and exit code 2. Bugs keep their traceback.
"""

from __future__ import annotations

EXIT_USER_ERROR = 2


class UserError(Exception):
    """A problem the user can fix: the message names what is wrong and what is allowed."""

    exit_code = EXIT_USER_ERROR


def invalid(field: str, value: object, allowed: str) -> UserError:
    """Build the standard message for a rejected config value.

    >>> str(invalid("lr", -1, "a positive float"))
    'invalid lr = -1: expected a positive float'
    """
    return UserError(f"invalid {field} = {value!r}: expected {allowed}")
