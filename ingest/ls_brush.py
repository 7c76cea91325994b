"""Label Studio brush masks: the RLE codec (thi.ng ``rle-pack`` format, as the labeling UI writes it).

Bit-identical to ``label_studio_sdk.converter.brush.decode_rle`` / ``encode_rle``. The SDK turns every bit into a
one-character string and reads fields with ``int(s, 2)``, so it costs microseconds per *bit*. Decoding is a strictly
sequential walk (each record's length depends on the fields before it), which no array operation expresses well:
it is compiled with numba and writes the output in place, the whole RGBA image or only the alpha channel that a
mask needs (a run covering flat positions [a, b) covers pixels [a // 4, b // 4)). Encoding is vectorised numpy.

Stream layout: 32 bits value count, 5 bits word size - 1, 4 x 4 bits run-length field sizes - 1, then records of
1 bit (1 = repeat, 0 = literal), 2 bits field-size index, that many bits run length - 1, then one word (repeat) or
run-length words (literal).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np


def _numba_cache_dir() -> None:
    """numba's ``cache=True`` writes compiled code beside this file; in a checkout the user cannot write (a shared
    install) it goes to the user's cache folder instead (``NUMBA_CACHE_DIR``, unless already set)."""
    if "NUMBA_CACHE_DIR" in os.environ or os.access(Path(__file__).parent, os.W_OK):
        return
    from core.fsio import user_cache_dir

    os.environ["NUMBA_CACHE_DIR"] = str(user_cache_dir("numba"))
    if "numba" in sys.modules:  # imported already: its configuration is read again
        from numba.core import config

        config.reload_config()


_numba_cache_dir()
from numba import njit  # noqa: E402  (after the cache folder is chosen)

from core.errors import SegLoopError  # noqa: E402

HEADER_BITS = 32 + 5 + 16
DEFAULT_RLE_SIZES = (3, 4, 8, 16)
ENDS_BETWEEN_RECORDS, ENDS_INSIDE_RECORD = -1, -2


@njit(cache=True, nogil=True)
def _bits(data: np.ndarray, pos: int, n: int) -> int:
    """The ``n`` bits of the stream starting at bit ``pos``, most significant first."""
    v = 0
    for p in range(pos, pos + n):
        v = (v << 1) | ((data[p >> 3] >> (7 - (p & 7))) & 1)
    return v


@njit(cache=True, nogil=True)
def _decode_into(data: np.ndarray, num: int, word: int, sizes: np.ndarray, out: np.ndarray,
                 alpha_only: bool) -> tuple[int, int]:
    """Decode the records after the header into ``out`` (flat RGBA, or one alpha value per pixel).

    Returns (status, values produced): status 0, or ENDS_BETWEEN_RECORDS / ENDS_INSIDE_RECORD for a stream that
    stops before ``num`` values."""
    nbits = data.shape[0] * 8
    pos = HEADER_BITS
    done = 0
    while done < num:
        if pos + 3 > nbits:
            return ENDS_BETWEEN_RECORDS, done
        repeat = _bits(data, pos, 1)
        size = sizes[_bits(data, pos + 1, 2)]
        pos += 3
        if pos + size > nbits:
            return ENDS_INSIDE_RECORD, done
        run = min(_bits(data, pos, size) + 1, num - done)  # the decoder stops at `num` values
        pos += size
        n_words = 1 if repeat else run
        if pos + word * n_words > nbits:
            return ENDS_INSIDE_RECORD, done
        for k in range(n_words):
            v = _bits(data, pos, word)
            pos += word
            a = done + k
            b = done + run if repeat else a + 1
            if alpha_only:  # 0 / 1, so that the caller can view the output as booleans
                out[a >> 2:b >> 2] = 1 if v > 0 else 0
            else:
                out[a:b] = v
        done += run
    return 0, done


def _header(rle: Sequence[int] | bytes | np.ndarray, expected: int | None,
            origin: str | None) -> tuple[np.ndarray, int, int, np.ndarray]:
    """(stream bytes, value count, word size, run-length field sizes), checked against the expected size."""
    try:  # bytes() of a list checks every value is 0..255, three times faster than a numpy round trip
        data = np.frombuffer(bytes(rle if not isinstance(rle, np.ndarray) else rle.astype(np.uint8)), np.uint8)
    except (ValueError, TypeError):
        raise SegLoopError("brush RLE is not a list of bytes (0..255)", path=origin,
                           fix="re-export the annotation from Label Studio (JSON export keeps 'rle')") from None
    if 8 * len(data) < HEADER_BITS:
        raise SegLoopError(f"brush RLE is truncated ({len(data)} bytes)", path=origin, fix="re-export it")
    num = _bits(data, 0, 32)
    word = _bits(data, 32, 5) + 1
    sizes = np.array([_bits(data, 37 + 4 * k, 4) + 1 for k in range(4)], np.int64)
    if expected is not None and num != expected:
        raise SegLoopError(f"brush RLE holds {num} values but width x height x 4 = {expected}", path=origin,
                           fix="the RLE belongs to another image size; check original_width/original_height")
    if word > 8:
        raise SegLoopError(f"brush RLE word size {word} > 8 bits is not a Label Studio brush", path=origin)
    return data, num, word, sizes


def _decode(rle: Sequence[int] | bytes | np.ndarray, expected: int | None, origin: str | None,
            alpha_only: bool) -> np.ndarray:
    data, num, word, sizes = _header(rle, expected, origin)
    out = np.empty(num // 4 if alpha_only else num, np.uint8)
    status, done = _decode_into(data, num, word, sizes, out, alpha_only)
    if status == ENDS_BETWEEN_RECORDS:
        raise SegLoopError(f"brush RLE ends after {done} of {num} values", path=origin, fix="re-export it")
    if status == ENDS_INSIDE_RECORD:
        raise SegLoopError(f"brush RLE ends inside a record after {done} of {num} values", path=origin,
                           fix="re-export it")
    return out


def decode_rle(rle: Sequence[int] | bytes | np.ndarray, expected: int | None = None,
               origin: str | None = None) -> np.ndarray:
    """Decode a Label Studio brush RLE into a flat uint8 array (RGBA values of the mask, row-major)."""
    return _decode(rle, expected, origin, alpha_only=False)


def decode_mask(rle: Sequence[int] | bytes, width: int, height: int, origin: str | None = None) -> np.ndarray:
    """A brush region as a boolean (height, width) mask: the alpha channel of the decoded RGBA image."""
    return _decode(rle, width * height * 4, origin, alpha_only=True).view(bool).reshape(height, width)


def _runs(arr: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    n = len(arr)
    change = np.flatnonzero(arr[1:] != arr[:-1])
    ends = np.append(change, n - 1)
    lengths = np.diff(np.append(-1, ends))
    return lengths, arr[ends]


def encode_rle(arr: np.ndarray, word: int = 8, rle_sizes: Sequence[int] = DEFAULT_RLE_SIZES) -> list[int]:
    """Encode a flat uint8 array exactly as ``label_studio_sdk.converter.brush.encode_rle`` does (same bytes)."""
    arr = np.asarray(arr).reshape(-1)
    if word != 8 or tuple(rle_sizes) != DEFAULT_RLE_SIZES:
        raise ValueError("only Label Studio's word size 8 and run sizes (3, 4, 8, 16) are supported")
    fields_v: list[np.ndarray] = [np.array([len(arr), word - 1, *[s - 1 for s in rle_sizes]], np.int64)]
    fields_w: list[np.ndarray] = [np.array([32, 5, 4, 4, 4, 4], np.int64)]
    if len(arr):
        lengths, values = _runs(arr.astype(np.int64))
        # runs longer than 2**16 are split into chunks of 2**16 (as the SDK does)
        chunks = np.maximum(1, -(-lengths // 2**16))
        rep_len = np.repeat(lengths, chunks)
        rep_val = np.repeat(values, chunks)
        first = np.cumsum(chunks) - chunks
        k = np.arange(len(rep_len)) - np.repeat(first, chunks)
        last_chunk = k == np.repeat(chunks, chunks) - 1
        long = rep_len > 2**16
        rep_len = np.where(long & ~last_chunk, 2**16, np.where(long, rep_len - 2**16 * k, rep_len))
        single = rep_len == 1
        idx = np.select([single, rep_len <= 8, rep_len <= 16, rep_len <= 256], [0, 0, 1, 2], 3)
        size = np.asarray(rle_sizes, np.int64)[idx]
        head = np.where(single, 0, 1) * 4 + idx  # repeat flag + size index, 3 bits
        count = np.where(single, 0, rep_len - 1)
        v = np.stack([head, count, rep_val], 1).reshape(-1)
        w = np.stack([np.full_like(size, 3), size, np.full_like(size, 8)], 1).reshape(-1)
        fields_v.append(v)
        fields_w.append(w)
    values_all = np.concatenate(fields_v)
    widths = np.concatenate(fields_w)
    total = int(widths.sum())
    field = np.repeat(np.arange(len(widths)), widths)
    pos = np.arange(total) - np.repeat(np.cumsum(widths) - widths, widths)
    bits = (values_all[field] >> (widths[field] - 1 - pos)) & 1
    pad = 8 - total % 8  # the SDK always pads, a whole zero byte when already aligned
    bits = np.concatenate([bits, np.zeros(pad, np.int64)]).astype(np.uint8)
    return np.packbits(bits).tolist()


def encode_mask(mask: np.ndarray) -> list[int]:
    """A boolean (height, width) mask as a Label Studio brush RLE (RGBA, every channel 255 inside)."""
    rgba = np.repeat((mask.astype(np.uint8) * 255)[:, :, None], 4, axis=2)
    return encode_rle(rgba.reshape(-1))
