"""IDX, the format of the MNIST files, described once: ``data`` reads files by it and
``download`` checks bytes against it as they stream in.

A big-endian header, then the raw bytes::

    magic  0x00000803 (2051): uint8, 3 dims -> images, n x 28 x 28
           0x00000801 (2049): uint8, 1 dim  -> labels, n
    dims   one big-endian uint32 per dim
    data   prod(dims) bytes
"""

import struct

ROWS = COLS = 28
MAGIC = {"images": 2051, "labels": 2049}
NDIM = {"images": 3, "labels": 1}
KINDS = {magic: kind for kind, magic in MAGIC.items()}


def item_bytes(kind):
    """Bytes per image or label."""
    return ROWS * COLS if kind == "images" else 1


def header(kind, count):
    """The exact header of a file of ``count`` MNIST images or labels."""
    if kind == "images":
        return struct.pack(">4I", MAGIC["images"], count, ROWS, COLS)
    return struct.pack(">2I", MAGIC["labels"], count)


def file_size(kind, count):
    """The exact length in bytes of such a file."""
    return len(header(kind, count)) + count * item_bytes(kind)


def kind_of(magic_bytes):
    """"images" or "labels" for a file's first 4 bytes, else None."""
    return KINDS.get(int.from_bytes(magic_bytes, "big")) if len(magic_bytes) == 4 else None


def dims(kind, raw):
    """The dims that follow the magic number: NDIM[kind] big-endian uint32s from ``raw``."""
    return struct.unpack(f">{NDIM[kind]}I", raw)


def header_dims(head):
    """The dims after the magic number of a whole header ``head`` (without the count's meaning)."""
    return struct.unpack(f">{len(head) // 4}I", head)[1:]
