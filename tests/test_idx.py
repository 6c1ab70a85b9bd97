"""bpcli.idx: the one description of the IDX format, as data and download use it."""

import struct

from bpcli import idx


def test_header_and_size_of_each_kind():
    assert idx.header("images", 3) == struct.pack(">4I", 2051, 3, 28, 28)
    assert idx.header("labels", 5) == struct.pack(">2I", 2049, 5)
    assert idx.file_size("images", 3) == 16 + 3 * 784
    assert idx.file_size("labels", 5) == 8 + 5


def test_kind_and_dims_read_back_what_header_writes():
    for kind, count in (("images", 60000), ("labels", 10000)):
        head = idx.header(kind, count)
        assert idx.kind_of(head[:4]) == kind
        assert idx.dims(kind, head[4:]) == idx.header_dims(head)
        assert idx.header_dims(head)[0] == count
    assert idx.kind_of(b"\x00\x00\x08\x02") is None     # another IDX type (int8)
    assert idx.kind_of(b"<htm") is None
    assert idx.kind_of(b"\x00\x00") is None              # too short to tell
