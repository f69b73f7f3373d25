"""The one exception type users see.

Every error a user can cause (bad file, bad option, missing dependency) is raised as
:class:`EvpError` with a one-line message that says what was expected and how to fix it.
The CLI prints that line and exits non-zero; anything else is a bug and shows a traceback.
"""


class EvpError(Exception):
    """A user-facing error: ``str(err)`` is one line that names the problem and the fix."""
