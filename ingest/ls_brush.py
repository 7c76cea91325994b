"""Label Studio brush masks: the RLE codec (thi.ng ``rle-pack`` format, as the labeling UI writes it).

Bit-identical to ``label_studio_sdk.converter.brush.decode_rle`` / ``encode_rle`` but vectorised: the SDK turns
every bit into a one-character string and reads fields with ``int(s, 2)``, so it costs microseconds per *bit*;
here the bitstream is unpacked once with numpy, every field width is read for every bit position with a few
shifted adds, and Python only walks the *records* (one per run). Output runs are expanded with ``np.repeat``.

Stream layout: 32 bits value count, 5 bits word size - 1, 4 x 4 bits run-length field sizes - 1, then records of
1 bit (1 = repeat, 0 = literal), 2 bits field-size index, that many bits run length - 1, then one word (repeat) or
run-length words (literal).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from core.errors import SegLoopError

HEADER_BITS = 32 + 5 + 16
DEFAULT_RLE_SIZES = (3, 4, 8, 16)


def _window32(data: np.ndarray, nbits: int) -> np.ndarray:
    """``out[p]`` = the 32 bits of the stream starting at bit ``p``, as an integer (zero past the end)."""
    padded = np.concatenate([data.astype(np.int64), np.zeros(5, np.int64)])
    five = (padded[:-4] << 32) | (padded[1:-3] << 24) | (padded[2:-2] << 16) | (padded[3:-1] << 8) | padded[4:]
    nb = len(data)
    out = np.empty((nb, 8), np.int64)
    for phase in range(8):  # bit p = 8 * byte + phase: one constant shift per phase, no gather
        np.right_shift(five[:nb], 8 - phase, out=out[:, phase])
    out &= 0xFFFFFFFF
    return out.reshape(-1)[:nbits]


def _segments(rle: Sequence[int] | bytes | np.ndarray, expected: int | None,
              origin: str | None) -> tuple[np.ndarray, np.ndarray]:
    """(values, lengths) of the decoded stream: ``np.repeat(values, lengths)`` is the flat output."""
    try:  # bytes() of a list checks every value is 0..255, three times faster than a numpy round trip
        data = np.frombuffer(bytes(rle if not isinstance(rle, np.ndarray) else rle.astype(np.uint8)), np.uint8)
    except (ValueError, TypeError):
        raise SegLoopError("brush RLE is not a list of bytes (0..255)", path=origin,
                           fix="re-export the annotation from Label Studio (JSON export keeps 'rle')") from None
    nbits = 8 * len(data)
    if nbits < HEADER_BITS:
        raise SegLoopError(f"brush RLE is truncated ({len(data)} bytes)", path=origin, fix="re-export it")
    w32 = _window32(data, nbits)
    num = int(w32[0])
    word = (int(w32[32]) >> 27) + 1
    sizes = [(int(w32[37 + 4 * k]) >> 28) + 1 for k in range(4)]
    if expected is not None and num != expected:
        raise SegLoopError(f"brush RLE holds {num} values but width x height x 4 = {expected}", path=origin,
                           fix="the RLE belongs to another image size; check original_width/original_height")
    if word > 8:
        raise SegLoopError(f"brush RLE word size {word} > 8 bits is not a Label Studio brush", path=origin)
    # Every bit position is treated as a potential record start: its flag, field size, run length and total
    # length in bits follow from the 32-bit window there (3 + 16 + 8 bits at most), all vectorised. The actual
    # records form a chain from the header (next = start + length), enumerated by pointer doubling: after k rounds
    # 2**k consecutive records are known, with O(stream bits) numpy work per round and no Python per record.
    sizes_a = np.asarray(sizes, np.int64)
    size = sizes_a[(w32 >> 29) & 3]
    run = ((w32 >> (29 - size)) & ((np.int64(1) << size) - 1)) + 1
    repeat = (w32 >> 31).astype(bool)
    nxt = np.minimum(np.arange(nbits) + 3 + size + np.where(repeat, word, word * run), nbits)
    nxt = np.append(nxt, nbits)  # position nbits = past the end, a fixed point
    chain = np.array([HEADER_BITS], np.int64)
    jump = nxt
    while chain[-1] < nbits and len(chain) <= num:  # the padding bits end the chain just past the stream
        chain = np.concatenate([chain, jump[chain]])
        jump = jump[jump]
    chain = chain[chain < nbits]
    runs = run[chain]
    covered = np.cumsum(runs)
    n_rec = int(np.searchsorted(covered, num)) + 1  # records needed to produce `num` values
    if n_rec > len(chain) or covered[min(n_rec, len(chain)) - 1] < num:
        done = int(covered[-1]) if len(covered) else 0
        raise SegLoopError(f"brush RLE ends after {min(done, num)} of {num} values", path=origin, fix="re-export it")
    chain, runs = chain[:n_rec], runs[:n_rec].copy()
    runs[-1] -= int(covered[n_rec - 1]) - num  # the last run may overshoot `num` (the decoder stops there)
    last_end = chain[-1] + 3 + size[chain[-1]] + (word if repeat[chain[-1]] else word * runs[-1])
    if last_end > nbits:
        raise SegLoopError(f"brush RLE ends inside its last record ({num} values expected)", path=origin,
                           fix="re-export it")
    rep = repeat[chain]
    first_word = chain + 3 + size[chain]
    # repeat records: one value; literal records: `run` values, one word each
    seg_len = np.where(rep, runs, 1)
    count = np.where(rep, 1, runs)
    rec_of = np.repeat(np.arange(n_rec), count)
    within = np.arange(len(rec_of)) - np.repeat(np.cumsum(count) - count, count)
    vals = w32[first_word[rec_of] + within * word] >> (32 - word)
    lens = np.repeat(seg_len, count)
    return vals.astype(np.uint8), lens


def decode_rle(rle: Sequence[int] | bytes | np.ndarray, expected: int | None = None,
               origin: str | None = None) -> np.ndarray:
    """Decode a Label Studio brush RLE into a flat uint8 array (RGBA values of the mask, row-major)."""
    vals, lens = _segments(rle, expected, origin)
    return np.repeat(vals, lens)


def decode_mask(rle: Sequence[int] | bytes, width: int, height: int, origin: str | None = None) -> np.ndarray:
    """A brush region as a boolean (height, width) mask: the alpha channel of the decoded RGBA image."""
    vals, lens = _segments(rle, width * height * 4, origin)
    # Only the alpha values (flat positions 4k + 3) matter: a segment covering flat positions [i, j) covers
    # pixels [i // 4, j // 4), so the mask is expanded at pixel level without materialising RGBA.
    ends = np.cumsum(lens)
    pixel_lens = ends // 4 - (ends - lens) // 4
    return np.repeat(vals > 0, pixel_lens).reshape(height, width)


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
