"""An order bitmap's runs are whole across its in-memory chunks, with and without an
excluded bitmap cut out of them."""

from __future__ import annotations

import numpy as np

from luod.kernel_model.kho.order_bitmap import CHUNK_BLOCKS, OrderBitmap

C = CHUNK_BLOCKS


def runs(bitmap: OrderBitmap, exclude: OrderBitmap | None = None) -> list[tuple[int, int]]:
    first, end = bitmap.runs(exclude)
    return list(zip(first.tolist(), end.tolist(), strict=True))


def test_runs_join_across_chunk_boundaries() -> None:
    bitmap = OrderBitmap(0)
    bitmap.assign_range(C - 5, 2 * C + 3, True)  # spans three chunks
    bitmap.assign_range(3 * C - 1, 3 * C + 2, True)  # cut by one boundary
    bitmap.assign(np.array([5 * C + 7], dtype=np.int64), True)
    assert runs(bitmap) == [(C - 5, 2 * C + 3), (3 * C - 1, 3 * C + 2), (5 * C + 7, 5 * C + 8)]
    hole = OrderBitmap(0)
    hole.assign_range(2 * C, 2 * C + 1, True)
    assert runs(bitmap, hole) == [
        (C - 5, 2 * C),
        (2 * C + 1, 2 * C + 3),
        (3 * C - 1, 3 * C + 2),
        (5 * C + 7, 5 * C + 8),
    ]
