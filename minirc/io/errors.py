"""The one error type of :mod:`minirc.io`: a bad ``.pth`` file is a ``ValueError`` naming the file."""


class PthError(ValueError):
    """A ``.pth`` file that cannot be read (or a state dict that cannot be written).

    Raised inside the readers without the file name; :func:`minirc.io.load_pth` re-raises it with the
    path in front, so every message reads ``<file>: <what is wrong>``.
    """
