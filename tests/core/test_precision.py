"""The precision resolver on CPUs with and without native bf16 (their flags faked), so that both
branches are checked whichever CPU runs the suite."""
from __future__ import annotations

import pytest

from dino_core import precision
from dino_core.errors import BackendUnavailable

CHOICES = ("fp32", "bf16")


@pytest.mark.parametrize("flags, native", [
    ({"avx2", "fma"}, False),                                   # AVX2 only (e.g. AMD EPYC Zen 2/3)
    ({"avx2", "avx512f", "avx512_vnni"}, False),                # AVX-512 with VNNI, no bf16
    ({"avx512f", "avx512_vnni", "avx512_bf16"}, True),
    ({"avx512f", "amx_bf16", "amx_tile"}, True),
])
def test_auto_is_bf16_only_where_the_cpu_has_native_bf16(monkeypatch, flags, native):
    monkeypatch.setattr(precision, "cpu_flags", lambda: frozenset(flags))
    assert precision.cpu_has_native_bf16() is native
    assert precision.resolve_precision("auto", "cpu", CHOICES) == ("bf16" if native else "fp32")
    assert precision.resolve_precision("auto", "cpu", ("fp32",)) == "fp32"
    assert precision.resolve_precision("fp32", "cpu", CHOICES) == "fp32"
    if native:
        assert precision.resolve_precision("bf16", "cpu", CHOICES) == "bf16"
    else:
        with pytest.raises(BackendUnavailable, match="this CPU has no native bf16"):
            precision.resolve_precision("bf16", "cpu", CHOICES)
