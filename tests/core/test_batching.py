"""Chunk-and-pad batching and the batch spec of a graph."""
from __future__ import annotations

import numpy as np
import pytest

from dino_core.batching import chunks, stack_padded
from dino_core.errors import OptionError
from dino_core.metadata import BatchSpec


def test_batch_spec_parses_writes_and_plans_calls():
    fixed, dynamic = BatchSpec.parse("1"), BatchSpec.parse("dynamic:1,4,16")
    assert str(fixed) == "1" and str(dynamic) == "dynamic:1,4,16"
    assert (dynamic.min, dynamic.opt, dynamic.max, dynamic.is_dynamic) == (1, 4, 16, True)
    assert fixed.calls(8) == (1, 1)            # a fixed graph: its batch, padded
    assert dynamic.calls(8) == (8, None)       # a dynamic one: up to its largest batch
    assert dynamic.calls(32) == (16, None)
    assert BatchSpec.of(2, None) == BatchSpec(2) and BatchSpec.of(1, (1, 2, 4)) == dynamic.__class__(
        fixed=None, dynamic=(1, 2, 4))


@pytest.mark.parametrize("text", ["0", "-1", "dynamic:4,2,8", "dynamic:1,2", "dynamic:a,b,c",
                                  "x", "99999", "dynamic:1,1,99999", ""])
def test_batch_spec_refuses_malformed_values(text):
    with pytest.raises(OptionError):
        BatchSpec.parse(text)


def test_stack_padded_repeats_the_last_item_and_chunks_cover_in_order():
    padded = stack_padded([np.zeros((3, 2, 2), np.float32), np.ones((3, 2, 2), np.float32)], 4)
    assert padded.shape == (4, 3, 2, 2) and padded[2:].min() == 1 and padded[0].max() == 0
    assert stack_padded([np.zeros(2)] * 5, 4).shape == (5, 2)   # never truncates
    assert [(s.start, s.stop) for s in chunks(9, 4)] == [(0, 4), (4, 8), (8, 9)]
    assert list(chunks(0, 4)) == []
    with pytest.raises(ValueError):
        list(chunks(3, 0))
