"""Checkpoints: the pipelines' state on disk, written atomically, read back or refused.

A checkpoint file is::

    b"SFCKPT\\n"                     magic
    4 bytes, big-endian            length of the header
    header (UTF-8 JSON)            format version, versions of shopfloor, NumPy, Numba and River,
                                   config hash, creation time, SHA-256 and sizes of the parts
    tree  (zlib of UTF-8 JSON)     the state: dicts, lists, numbers, strings; arrays and bytes
                                   are references into the blob
    blob  (zlib of raw bytes)      array contents and byte strings, concatenated

Arrays keep dtype, shape and every bit, floats go through JSON's round-trip ``repr`` (NaN and
infinities included), so a restored pipeline continues exactly. Nothing is unpickled here: River
models are opaque byte strings that their own adapter checks (and refuses across River
versions). The file is written to a temporary name in the same directory, fsynced, renamed over
the old one, and the directory is fsynced, so a power cut leaves either the old checkpoint or
the new one. A file that fails any check is moved aside (``*.bad``) and the agent starts cold.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import struct
import time
import zlib
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import numba
import numpy as np

from shopfloor import __version__

__all__ = [
    "FORMAT_VERSION",
    "Checkpoint",
    "CheckpointError",
    "clean_temporaries",
    "discard",
    "read_checkpoint",
    "versions",
    "write_checkpoint",
]

log = logging.getLogger("shopfloor.agent.state")

MAGIC = b"SFCKPT\n"
FORMAT_VERSION = 1
TEMP_SUFFIX = ".tmp"
MAX_HEADER = 64 * 1024
# A zip bomb must not take the device down: a 1.5 MB file that inflated to 1.5 GB peaked at
# 3 GB of RSS at start (the unit allows 512 MiB). A thousand default signals need ~2 MB of
# arrays and ~1 MB of tree; a thousand River models ~50 MB.
MAX_TREE_INFLATED = 64 * 1024 * 1024
MAX_BLOB_INFLATED = 256 * 1024 * 1024


class CheckpointError(ValueError):
    """A checkpoint that cannot be used; the message says why."""


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """A checkpoint read back: its header and the state tree."""

    header: dict[str, Any]
    state: Any


def versions() -> dict[str, str]:
    """The versions that decide whether a checkpoint is compatible."""
    try:
        river = metadata.version("river")
    except metadata.PackageNotFoundError:  # pragma: no cover - river is a dependency
        river = "none"
    return {"shopfloor": __version__, "numpy": np.__version__, "numba": numba.__version__,
            "river": river}


def write_checkpoint(path: str | Path, state: Any, config_hash: str) -> int:
    """Write ``state`` atomically to ``path``; returns the file size in bytes."""
    target = Path(path)
    blob = bytearray()
    tree = _encode(state, blob)
    tree_z = zlib.compress(json.dumps(tree, separators=(",", ":")).encode(), 1)
    blob_z = zlib.compress(bytes(blob), 1)
    header = {
        "format": FORMAT_VERSION, "versions": versions(), "config_hash": config_hash,
        "created": time.time(), "tree_bytes": len(tree_z), "blob_bytes": len(blob_z),
        "sha256": hashlib.sha256(tree_z + blob_z).hexdigest(),
    }
    head = json.dumps(header, separators=(",", ":")).encode()
    data = MAGIC + struct.pack(">I", len(head)) + head + tree_z + blob_z
    tmp = target.with_name(f".{target.name}.{os.getpid()}{TEMP_SUFFIX}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        view = memoryview(data)
        while view:
            written = os.write(fd, view)
            view = view[written:]
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        tmp.unlink(missing_ok=True)
        raise
    os.close(fd)
    os.replace(tmp, target)
    _fsync_dir(target.parent)
    return len(data)


def read_checkpoint(path: str | Path, config_hash: str | None = None) -> Checkpoint:
    """Read and verify a checkpoint; :class:`CheckpointError` says what is wrong with it."""
    p = Path(path)
    try:
        data = p.read_bytes()
    except OSError as exc:
        raise CheckpointError(f"cannot read {p}: {exc.strerror or exc}") from None
    if not data.startswith(MAGIC) or len(data) < len(MAGIC) + 4:
        raise CheckpointError(f"{p} is not a shopfloor checkpoint (bad magic)")
    (head_len,) = struct.unpack(">I", data[len(MAGIC):len(MAGIC) + 4])
    start = len(MAGIC) + 4
    if head_len > MAX_HEADER or start + head_len > len(data):
        raise CheckpointError(f"{p}: header length {head_len} does not fit the file")
    try:
        header = json.loads(data[start:start + head_len])
    except ValueError:
        raise CheckpointError(f"{p}: the header is not JSON") from None
    if not isinstance(header, dict):
        raise CheckpointError(f"{p}: the header is not a JSON object")
    if header.get("format") != FORMAT_VERSION:
        raise CheckpointError(f"{p}: format {header.get('format')!r}, this shopfloor reads "
                              f"format {FORMAT_VERSION}")
    body = data[start + head_len:]
    tree_n, blob_n = header.get("tree_bytes"), header.get("blob_bytes")
    if not isinstance(tree_n, int) or not isinstance(blob_n, int) or tree_n + blob_n != len(body):
        raise CheckpointError(f"{p}: truncated or padded ({len(body)} body bytes, header says "
                              f"{tree_n} + {blob_n})")
    if hashlib.sha256(body).hexdigest() != header.get("sha256"):
        raise CheckpointError(f"{p}: checksum mismatch")
    if config_hash is not None and header.get("config_hash") != config_hash:
        # Not an error for the file: the caller restores what still fits, signal by signal.
        log.info("checkpoint %s was written under another configuration", p)
    try:
        inflate = zlib.decompressobj()
        tree_json = inflate.decompress(body[:tree_n], MAX_TREE_INFLATED)
        if inflate.unconsumed_tail:
            raise CheckpointError(f"{p}: the state tree is larger than {MAX_TREE_INFLATED} bytes")
        inflate = zlib.decompressobj()
        blob = inflate.decompress(body[tree_n:], MAX_BLOB_INFLATED)
        if inflate.unconsumed_tail:
            raise CheckpointError(f"{p}: the arrays are larger than {MAX_BLOB_INFLATED} bytes")
        state = _decode(json.loads(tree_json), blob)
    except (zlib.error, ValueError, KeyError, TypeError, IndexError) as exc:
        raise CheckpointError(f"{p}: the state does not decode ({exc})") from None
    return Checkpoint(header=header, state=state)


def discard(path: Path, reason: str) -> Path | None:
    """Move a bad checkpoint aside (never delete evidence) and say so in the log."""
    bad = path.with_name(f"{path.name}.{int(time.time())}.bad")
    try:
        os.replace(path, bad)
    except OSError as exc:
        log.error("checkpoint %s is unusable (%s) and cannot be moved aside: %s", path, reason,
                  exc)
        return None
    log.warning("checkpoint unusable, starting cold: %s; moved to %s", reason, bad)
    return bad


def clean_temporaries(directory: Path) -> int:
    """Remove temp files a crash left behind during a write; returns how many."""
    removed = 0
    for stray in directory.glob(f".*{TEMP_SUFFIX}"):
        try:
            stray.unlink()
            removed += 1
        except OSError:
            log.warning("cannot remove stray temporary file %s", stray)
    return removed


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _encode(value: Any, blob: bytearray) -> Any:
    if value is None or isinstance(value, bool | str):
        return value
    if isinstance(value, int | float):
        return value
    if isinstance(value, np.generic):
        return _encode(value.item(), blob)
    if isinstance(value, np.ndarray):
        arr = np.ascontiguousarray(value)
        if arr.dtype.hasobject:
            raise TypeError("object arrays cannot be checkpointed")
        offset = len(blob)
        blob += arr.tobytes()
        return {"__nd__": [arr.dtype.str, list(arr.shape), offset, arr.nbytes]}
    if isinstance(value, bytes | bytearray):
        offset = len(blob)
        blob += value
        return {"__bytes__": [offset, len(value)]}
    if isinstance(value, dict):
        if not all(isinstance(k, str) for k in value):
            raise TypeError("checkpoint dict keys must be strings")
        return {"__dict__": {k: _encode(v, blob) for k, v in value.items()}}
    if isinstance(value, list | tuple):
        return [_encode(v, blob) for v in value]
    raise TypeError(f"cannot checkpoint a {type(value).__name__}")


def _decode(node: Any, blob: bytes) -> Any:
    if isinstance(node, list):
        return [_decode(v, blob) for v in node]
    if isinstance(node, dict):
        if "__nd__" in node:
            dtype, shape, offset, nbytes = node["__nd__"]
            dt = np.dtype(dtype)
            if dt.hasobject or offset < 0 or offset + nbytes > len(blob):
                raise ValueError("array outside the blob")
            arr = np.frombuffer(blob, dtype=dt, count=nbytes // max(dt.itemsize, 1),
                                offset=offset)
            return arr.reshape(shape).copy()
        if "__bytes__" in node:
            offset, size = node["__bytes__"]
            if offset < 0 or offset + size > len(blob):
                raise ValueError("bytes outside the blob")
            return bytes(blob[offset:offset + size])
        return {k: _decode(v, blob) for k, v in node["__dict__"].items()}
    return node
