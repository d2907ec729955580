"""The CPU fast paths of the CuPy backend's model step (issue 18, item 5) against its general paths.

Each fast path computes the same sums as the path it stands in for: tiled max pooling against the
padded-plane walk, flat col2im against the strided one, and a convolution vjp from the columns its
forward pass kept against one that extracts them again. Speed is the bench's business, not these
tests'.
"""

from __future__ import annotations

import numpy as np
import pytest
from threadpoolctl import threadpool_info

from nutshell.backends.cupy_impl import blas, conv, heap, im2col, pooling

TILED = {"kernel": [2, 2], "stride": [2, 2], "pads": [0, 0, 0, 0], "dilation": [1, 1], "ceil_mode": False}


def relu_grid(rng: np.random.Generator, *shape: int) -> np.ndarray:
    """A ReLU's output on a coarse grid: ties in most windows."""
    return np.maximum(np.round(rng.standard_normal(shape) * 2) / 2, 0).astype(np.float32)


@pytest.mark.parametrize("kernel", [[2, 2], [3, 2]])
def test_tiled_max_pool_gradient_equals_the_padded_walk(kernel):
    rng = np.random.default_rng(3)
    x = relu_grid(rng, 3, 4, 6, 8 // kernel[1] * kernel[1])
    x[1, 2, 3, 3] = np.nan
    attrs = {**TILED, "kernel": kernel, "stride": kernel}
    win = pooling.window(x.shape, attrs)
    assert pooling._tiles(win)
    y, saved = pooling.max_pool_forward(x, win)
    gy = rng.standard_normal(y.shape).astype(np.float32)
    y_planes, planes = pooling._planes_max(x, win)
    np.testing.assert_array_equal(y_planes, y)
    np.testing.assert_array_equal(pooling._tiled_scatter(gy, saved, win), pooling._first_max_scatter(gy, planes, win))


def test_windows_that_leave_rows_over_do_not_tile():
    win = pooling.window((1, 1, 9, 8), TILED)
    assert not pooling._tiles(win) and pooling._tiles(pooling.window((1, 1, 8, 8), TILED))


@pytest.mark.parametrize("kernel, pads, dilation", [((3, 3), (1, 1, 1, 1), (1, 1)), ((2, 3), (0, 2, 1, 0), (2, 1)),
                                                    ((1, 1), (0, 0, 0, 0), (1, 1))])
def test_flat_col2im_equals_the_strided_one(kernel, pads, dilation):
    rng = np.random.default_rng(4)
    win = im2col.Window.make((5, 6), kernel, (1, 1), pads, dilation)
    c, m = 3, 2
    gcol = rng.standard_normal((c, *kernel, m, win.oh, win.ow))
    hp, wp = win.padded
    flat = np.zeros((c, *kernel, m, hp, wp))
    flat[..., :win.oh, :win.ow] = gcol                                       # the columns over the padded planes
    np.testing.assert_allclose(im2col.col2im_flat(flat.reshape(c, *kernel, m * hp * wp), win),
                               im2col.col2im(gcol, win), rtol=1e-14, atol=1e-14)


@pytest.mark.parametrize("stride", [1, 2])
def test_a_vjp_from_kept_columns_equals_one_that_extracts_them(stride):
    rng = np.random.default_rng(5)
    x, w, b = (rng.standard_normal(s).astype(np.float32) for s in ((4, 6, 7, 7), (8, 3, 3, 3), (8,)))
    attrs = {"stride": [stride] * 2, "pads": [1, 1, 1, 1], "dilation": [1, 1], "groups": 2}
    y, cols = conv.conv2d_forward_saving(x, w, b, attrs, im2col.current_budget())
    assert cols is not None
    np.testing.assert_array_equal(y, conv.conv2d_forward(x, w, b, attrs, im2col.current_budget()))
    gy = rng.standard_normal(y.shape).astype(np.float32)
    kept = conv.conv2d_vjp_saved({"x": x, "w": w, "b": b}, cols, {"y": gy}, attrs, {"x", "w", "b"})
    again = conv.conv2d_vjp({"x": x, "w": w, "b": b}, {"y": gy}, attrs)
    assert kept.keys() == again.keys() == {"x", "w", "b"}
    for k in kept:
        np.testing.assert_array_equal(kept[k], again[k])
    no_x = conv.conv2d_vjp_saved({"x": x, "w": w, "b": b}, cols, {"y": gy}, attrs, {"w", "b"})
    assert no_x.keys() == {"w", "b"}


def test_columns_over_the_budget_are_not_kept():
    x, w = np.ones((4, 2, 5, 5), np.float32), np.ones((3, 2, 3, 3), np.float32)
    attrs = {"stride": [1, 1], "pads": [0, 0, 0, 0], "dilation": [1, 1], "groups": 1}
    col_bytes = 4 * 2 * 9 * 9 * 4
    assert conv.conv2d_forward_saving(x, w, None, attrs, col_bytes)[1] is not None
    assert conv.conv2d_forward_saving(x, w, None, attrs, col_bytes - 1)[1] is None


def test_an_infinite_kernel_takes_the_strided_col2im():
    """The flat path multiplies the kernel by the zeros around the output: inf·0 would be NaN."""
    x = np.ones((1, 1, 4, 4), np.float32)
    w = np.full((1, 1, 3, 3), np.inf, np.float32)
    win = conv.window(x.shape, w.shape, {"stride": [1, 1], "pads": [1, 1, 1, 1], "dilation": [1, 1]})
    assert not conv._flat_ok(x, w, win) and conv._flat_ok(x, np.ones_like(w), win)


def test_one_blas_thread_inside_and_the_count_restored_after():
    def counts() -> list[int]:
        return [pool["num_threads"] for pool in threadpool_info() if pool["user_api"] == "blas"]

    before = counts()
    if not before:
        pytest.skip("no BLAS library that threadpoolctl knows is loaded")
    with blas.one_thread():
        assert counts() == [1] * len(before)
    assert counts() == before


def test_keeping_freed_memory_is_set_once():
    assert heap.keep_freed_memory() is heap.keep_freed_memory()
    assert heap.keep_freed_memory.cache_info().currsize == 1
