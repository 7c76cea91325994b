"""SegLoop's Label Studio brush codec against label_studio_sdk.converter.brush: same bytes, same pixels."""

import numpy as np
import pytest

from core.errors import SegLoopError
from ingest.ls_brush import decode_mask, decode_rle, encode_mask, encode_rle


def _cases():
    rng = np.random.default_rng(0)
    square = np.zeros((60, 80), bool)
    square[10:40, 20:50] = True
    noisy = rng.random((40, 50)) < 0.3
    long = np.zeros((300, 300), bool)  # runs longer than 2**16 values
    long[250:, :] = True
    empty = np.zeros((7, 9), bool)
    full = np.ones((7, 9), bool)
    return {"square": square, "noisy": noisy, "long": long, "empty": empty, "full": full}


@pytest.mark.parametrize("name", list(_cases()))
def test_bit_identical_to_the_sdk(name, ls_brush_reference):
    mask = _cases()[name]
    flat = np.repeat((mask.astype(np.uint8) * 255)[:, :, None], 4, 2).reshape(-1)
    ref_rle = ls_brush_reference.encode_rle(flat)
    assert encode_rle(flat) == ref_rle == encode_mask(mask)
    np.testing.assert_array_equal(decode_rle(ref_rle), ls_brush_reference.decode_rle(ref_rle))
    np.testing.assert_array_equal(decode_mask(ref_rle, mask.shape[1], mask.shape[0]), mask)


def test_arbitrary_byte_values_and_literal_runs(ls_brush_reference):
    rng = np.random.default_rng(1)
    arr = rng.integers(0, 256, 3000).astype(np.uint8)
    arr[500:900] = 17
    rle = ls_brush_reference.encode_rle(arr)
    assert encode_rle(arr) == rle
    np.testing.assert_array_equal(decode_rle(rle), arr)


def test_bad_rle():
    rle = encode_mask(np.ones((4, 5), bool))
    with pytest.raises(SegLoopError, match="width x height x 4 = 100"):
        decode_mask(rle, 5, 5, origin="export.json")
    with pytest.raises(SegLoopError, match="truncated"):
        decode_rle(rle[:3])
    with pytest.raises(SegLoopError, match="ends"):
        decode_rle(encode_rle(np.arange(200, dtype=np.uint8))[:-20])
    with pytest.raises(SegLoopError, match="not a list of bytes"):
        decode_rle([1, 2, 300])
