"""Reading and writing torch ``.pth`` files without torch.

* :func:`load_pth` -- a state dict as ``{name: np.ndarray}`` (both formats ``torch.save`` writes);
* :func:`read_pth` -- any object a ``.pth`` holds, tensors as arrays;
* :func:`save_pth` -- ``{name: array}`` in torch's zip format, which ``torch.load(weights_only=True)`` reads.

Loading never runs code from the file: the pickle inside may name only an exact allow-list of
torch's tensor-rebuilding globals (:mod:`minirc.io.unpickler`). See docs/io.md.
"""
from minirc.io.errors import PthError
from minirc.io.pth import load_pth, read_pth, save_pth

__all__ = ["load_pth", "read_pth", "save_pth", "PthError"]
