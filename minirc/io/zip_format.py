"""torch's zip format (``torch.save`` since torch 1.6): read it, and write it the way torch does.

An uncompressed zip archive whose entries all sit in one folder (torch names it after the file;
readers take whatever the first entry's folder is)::

    <folder>/data.pkl          the pickled object; tensors point at storages by persistent id
    <folder>/byteorder         "little" or "big" (absent in older files: little)
    <folder>/data/<key>        one raw storage each, numel * itemsize bytes
    <folder>/version           the archive format version, "3\\n" for torch.save files
    (.format_version, .storage_alignment, .data/serialization_id: bookkeeping, ignored here)

A storage's persistent id is ``('storage', torch.FloatStorage, key, location, numel)``. torch pads
every entry's local header with an extra field (id ``FB``) so that its data starts at a multiple of
64 bytes, which lets torch map storages from the file without copying; :func:`write_zip` does the same.
"""
from __future__ import annotations

import io
import struct
import zipfile

from minirc.io.errors import PthError
from minirc.io.tensors import Storage, StorageType, itemsize

ALIGNMENT = 64  # torch's default storage alignment (torch.utils.serialization.config.save.storage_alignment)
_LOCAL_HEADER = 30  # bytes of a zip local file header before its name and extra field
_ZIP64_LOCAL_EXTRA = 20  # what zipfile appends to the extra field of an entry over ZIP64_LIMIT
_DATE = (1980, 1, 1, 0, 0, 0)  # fixed timestamps: the same state dict gives the same bytes


def read_zip(buf: bytes, load_pickle):
    """Open torch's zip archive in ``buf``; ``load_pickle(data_pkl, persistent_load)`` reads the object."""
    try:
        archive = zipfile.ZipFile(io.BytesIO(buf))
        infos = archive.infolist()
    except (zipfile.BadZipFile, OSError, ValueError, struct.error, NotImplementedError) as e:
        raise PthError(f"a zip archive that cannot be opened (truncated or corrupted?): {e}") from None
    if not infos or "/" not in infos[0].filename:
        raise PthError("a zip archive without torch's <folder>/data.pkl layout")
    folder = infos[0].filename.split("/", 1)[0]
    records = {i.filename[len(folder) + 1:]: i for i in infos if i.filename.startswith(folder + "/")}
    if "data.pkl" not in records:
        raise PthError(f"a zip archive without {folder}/data.pkl (a TorchScript archive? torch.jit.save "
                       f"files are not torch.save files)")

    def read(name: str, size: int | None = None) -> bytes:
        info = records[name]
        if info.compress_type != zipfile.ZIP_STORED:
            raise PthError(f"{folder}/{name} is compressed (method {info.compress_type}); torch writes "
                           f"stored entries")
        if size is not None and info.file_size != size:
            raise PthError(f"{folder}/{name} holds {info.file_size} bytes, its storage id says {size}")
        if info.header_offset + info.file_size > len(buf):
            raise PthError(f"{folder}/{name} ends past the end of the file (truncated?)")
        try:
            return archive.read(info)
        except (zipfile.BadZipFile, OSError, ValueError, struct.error, EOFError) as e:
            raise PthError(f"{folder}/{name} cannot be read (truncated or corrupted?): {e}") from None

    byteorder = read("byteorder").decode("ascii", "replace") if "byteorder" in records else "little"
    if byteorder not in ("little", "big"):
        raise PthError(f"{folder}/byteorder: expected 'little' or 'big', got {byteorder!r:.40}")
    if "version" in records:
        version = read("version").decode("ascii", "replace").strip()
        if not version.isdigit():
            raise PthError(f"{folder}/version: expected an integer, got {version!r:.40}")
    storages = {}

    def persistent_load(pid):
        if not isinstance(pid, tuple) or len(pid) != 5 or pid[0] not in ("storage", b"storage"):
            raise PthError(f"data.pkl: expected a persistent id ('storage', type, key, location, numel), "
                           f"got {pid!r:.100}")
        _, storage_type, key, _location, numel = pid
        if not isinstance(storage_type, StorageType) or not isinstance(key, str) or type(numel) is not int \
                or numel < 0:
            raise PthError(f"data.pkl: bad storage id {pid!r:.100}")
        if key not in storages:
            if f"data/{key}" not in records:
                raise PthError(f"data.pkl refers to storage {key!r}; the archive has no {folder}/data/{key}")
            data = read(f"data/{key}", numel * itemsize(storage_type.dtype))
            storages[key] = Storage(key, storage_type.dtype, numel, data, byteorder)
        storage = storages[key]
        if (storage.dtype, storage.numel) != (storage_type.dtype, numel):
            raise PthError(f"data.pkl: storage {key!r} is named as {storage.numel} x {storage.dtype} and as "
                           f"{numel} x {storage_type.dtype}")
        return storage

    return load_pickle(read("data.pkl"), persistent_load)


def write_zip(file, folder: str, records: list) -> None:
    """Write ``records`` ``[(name, bytes), ...]`` as stored entries ``folder/name``, data 64-byte aligned."""
    with zipfile.ZipFile(file, "w", zipfile.ZIP_STORED) as archive:
        for name, data in records:
            info = zipfile.ZipInfo(f"{folder}/{name}", date_time=_DATE)
            info.compress_type = zipfile.ZIP_STORED
            info.extra = _padding(archive.start_dir, len(info.filename.encode("ascii")), len(data))
            archive.writestr(info, data)


def _padding(header_offset: int, name_length: int, size: int) -> bytes:
    """torch's ``FB`` extra field: pads the local header so that the entry's data starts aligned."""
    start = header_offset + _LOCAL_HEADER + name_length + 4  # 4: the extra field's id and length
    if size * 1.05 > zipfile.ZIP64_LIMIT:  # zipfile's own rule for adding a ZIP64 extra field
        start += _ZIP64_LOCAL_EXTRA
    pad = -start % ALIGNMENT
    return b"FB" + struct.pack("<H", pad) + b"Z" * pad
