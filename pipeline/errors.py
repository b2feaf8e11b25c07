"""The one kind of failure a user fixes by changing the input or the flags.

Kept free of heavy imports, so the command line can catch it before Beam loads.
"""


class InputError(ValueError):
    """The input or the output directory cannot be used as asked; the message names what and the fix."""
