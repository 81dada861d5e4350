"""The one exception type for mistakes a user can fix.

Raise `UserError` with a message that names the problem and the fix. The CLI prints
the message (no traceback) and exits with code 2.
"""


class UserError(ValueError):
    """Bad input from the user: the message says what is wrong and how to fix it."""
