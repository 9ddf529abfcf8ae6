"""Write the ``data.pkl`` of a state dict as torch does, without torch, opcode by opcode.

Python's pickler can only name a global it can import, and ``torch._utils._rebuild_tensor_v2`` is
not importable here, so the few opcodes torch's pickler emits for a state dict (protocol 2) are
written directly. For ``{"w": <float32 tensor of shape (2, 3)>}`` the program reads::

    PROTO 2
    GLOBAL 'collections OrderedDict'  EMPTY_TUPLE REDUCE          # the state dict
    MARK
      BINUNICODE 'w'
      GLOBAL 'torch._utils _rebuild_tensor_v2'
      MARK
        MARK 'storage' GLOBAL 'torch FloatStorage' '0' 'cpu' 6 TUPLE BINPERSID  # the storage id
        0 (2, 3) (3, 1) False OrderedDict()                      # offset, size, stride, grad, hooks
      TUPLE REDUCE
    SETITEMS STOP

Globals are memoized (``BINPUT``) and fetched again with ``BINGET``, as torch's pickler does.
"""
from __future__ import annotations

import struct

PROTO, STOP, MARK, TUPLE, EMPTY_TUPLE = b"\x80", b".", b"(", b"t", b")"
TUPLE1, TUPLE2, TUPLE3 = b"\x85", b"\x86", b"\x87"
GLOBAL, REDUCE, BINPERSID, SETITEMS, BINPUT, LONG_BINPUT = b"c", b"R", b"Q", b"u", b"q", b"r"
BINGET, LONG_BINGET, BINUNICODE, NEWFALSE, NEWTRUE = b"h", b"j", b"X", b"\x89", b"\x88"
BININT1, BININT2, BININT, LONG1, NONE = b"K", b"M", b"J", b"\x8a", b"N"


class PickleWriter:
    """Accumulates protocol-2 opcodes; :meth:`getvalue` returns the finished pickle."""

    def __init__(self):
        self.out = [PROTO + b"\x02"]
        self.memo = {}

    def getvalue(self) -> bytes:
        return b"".join(self.out + [STOP])

    def global_(self, module: str, name: str) -> None:
        key = (module, name)
        if key in self.memo:
            i = self.memo[key]
            self.out.append(BINGET + bytes([i]) if i < 256 else LONG_BINGET + struct.pack("<I", i))
            return
        i = self.memo[key] = len(self.memo)
        self.out.append(GLOBAL + f"{module}\n{name}\n".encode("ascii"))
        self.out.append(BINPUT + bytes([i]) if i < 256 else LONG_BINPUT + struct.pack("<I", i))

    def value(self, v) -> None:
        """None, a bool, an int, a str or a tuple of those."""
        if v is None:
            self.out.append(NONE)
        elif v is True or v is False:
            self.out.append(NEWTRUE if v else NEWFALSE)
        elif isinstance(v, int):
            self.int_(v)
        elif isinstance(v, str):
            data = v.encode("utf-8")
            self.out.append(BINUNICODE + struct.pack("<I", len(data)) + data)
        elif isinstance(v, tuple):
            self.tuple_(v)
        else:
            raise TypeError(f"PickleWriter.value: cannot write a {type(v).__name__}")

    def int_(self, v: int) -> None:
        if 0 <= v < 256:
            self.out.append(BININT1 + bytes([v]))
        elif 0 <= v < 65536:
            self.out.append(BININT2 + struct.pack("<H", v))
        elif -2 ** 31 <= v < 2 ** 31:
            self.out.append(BININT + struct.pack("<i", v))
        else:  # two's complement, little-endian, as few bytes as pickle's encode_long uses
            data = v.to_bytes((v.bit_length() + 8) // 8, "little", signed=True)
            self.out.append(LONG1 + bytes([len(data)]) + data)

    def tuple_(self, items: tuple) -> None:
        if len(items) == 0:
            self.out.append(EMPTY_TUPLE)
            return
        if len(items) > 3:
            self.out.append(MARK)
        for item in items:
            self.value(item)
        self.out.append((TUPLE1, TUPLE2, TUPLE3)[len(items) - 1] if len(items) <= 3 else TUPLE)

    def ordered_dict(self) -> None:
        """An empty ``collections.OrderedDict()`` on the stack."""
        self.global_("collections", "OrderedDict")
        self.out += [EMPTY_TUPLE, REDUCE]

    def tensor(self, storage_type: str, key: str, numel: int, offset: int, size: tuple, stride: tuple) -> None:
        """``_rebuild_tensor_v2(<storage id>, offset, size, stride, False, OrderedDict())`` on the stack."""
        self.global_("torch._utils", "_rebuild_tensor_v2")
        self.out += [MARK, MARK]
        self.value("storage")
        self.global_("torch", storage_type)
        for v in (key, "cpu", numel):
            self.value(v)
        self.out += [TUPLE, BINPERSID]
        for v in (offset, tuple(size), tuple(stride), False):
            self.value(v)
        self.ordered_dict()
        self.out += [TUPLE, REDUCE]

    def state_dict(self, entries) -> bytes:
        """The whole pickle of an OrderedDict of ``entries``: ``[(name, tensor args), ...]``."""
        self.ordered_dict()
        if entries:
            self.out.append(MARK)
            for name, args in entries:
                self.value(name)
                self.tensor(*args)
            self.out.append(SETITEMS)
        return self.getvalue()
