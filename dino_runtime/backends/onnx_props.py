"""An ``.onnx`` file's ``metadata_props`` read without loading its graph (no onnx package).

``--backend auto`` needs one field of the metadata (the file's precision) before it chooses the
engine that loads the file; parsing a 90 MB ModelProto for it would cost more than the choice.
A ModelProto's top-level fields are read one by one and the graph (field 7) and the weights are
skipped by seeking over their lengths (protobuf wire format: a varint key ``field << 3 | type``,
then a varint, 8 bytes, a length-delimited run, or 4 bytes). Anything that does not parse gives
an empty result: the engines still read and check the file themselves.
"""
from __future__ import annotations

import json
import os
from typing import BinaryIO

METADATA_PROPS = 14          # ModelProto.metadata_props: repeated StringStringEntryProto
MAX_ENTRY_BYTES = 1 << 20    # a metadata entry larger than this is not ours
MAX_FIELDS = 64              # a ModelProto has a dozen top-level fields


def _varint(f: BinaryIO) -> int | None:
    value, shift = 0, 0
    while shift < 64:
        byte = f.read(1)
        if not byte:
            return None
        value |= (byte[0] & 0x7F) << shift
        if byte[0] < 0x80:
            return value
        shift += 7
    return None


def _entry(data: bytes) -> tuple[str, str] | None:
    """A StringStringEntryProto's (key, value)."""
    fields: dict[int, str] = {}
    i = 0
    while i < len(data):
        tag = data[i]
        i += 1
        if tag & 7 != 2 or tag >> 3 not in (1, 2):
            return None
        length, shift = 0, 0
        while i < len(data):
            byte = data[i]
            i += 1
            length |= (byte & 0x7F) << shift
            shift += 7
            if byte < 0x80:
                break
        fields[tag >> 3] = data[i:i + length].decode("utf-8", "replace")
        i += length
    return (fields[1], fields.get(2, "")) if 1 in fields else None


def read_props(path: str | os.PathLike) -> dict[str, str]:
    """The file's metadata_props as a dict; {} when the file cannot be read or parsed."""
    props: dict[str, str] = {}
    try:
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            for _ in range(MAX_FIELDS):
                key = _varint(f)
                if key is None:
                    break
                field, wire = key >> 3, key & 7
                if wire == 0:
                    if _varint(f) is None:
                        return {}
                elif wire == 1:
                    f.seek(8, os.SEEK_CUR)
                elif wire == 5:
                    f.seek(4, os.SEEK_CUR)
                elif wire == 2:
                    length = _varint(f)
                    if length is None or f.tell() + length > size:
                        return {}
                    if field == METADATA_PROPS and length <= MAX_ENTRY_BYTES:
                        entry = _entry(f.read(length))
                        if entry is not None:
                            props[entry[0]] = entry[1]
                    else:
                        f.seek(length, os.SEEK_CUR)
                else:
                    return {}
    except OSError:
        return {}
    return props


def exported_precision(path: str | os.PathLike) -> str | None:
    """``dino.precision`` of an exported file (``int8``, ``fp16`` ...); None when absent."""
    raw = read_props(path).get("dino.precision")
    try:
        value = json.loads(raw) if raw is not None else None
    except ValueError:
        return None
    return value if isinstance(value, str) else None
