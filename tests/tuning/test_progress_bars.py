"""Tuning's progress bars join the compile's progress display (one live display at a time)."""

import io

from rich.console import Console

from tensoregg import progress
from tensoregg.tuning.search import KernelTuning, _bars


def test_tuning_bars_show_best_against_untuned_inside_a_shown_progress(monkeypatch):
    out = io.StringIO()
    monkeypatch.setattr("rich.console.Console", lambda **_: Console(file=out, force_terminal=True))
    kernel = KernelTuning("MatMul GEMM 1x64x96x128 float32", "sig", "tiled a", 2e-5, "tiled b", 1e-5)
    with progress.shown(True):  # as the CLI runs every command
        with _bars(60.0, None) as show:
            show(1, 2, kernel, 15.0)
            descriptions = [t.description for t in progress.active().tasks]
        assert progress.active().tasks == []
    assert descriptions == ["kernels 1/2 (MatMul GEMM 1x64x96x128 float32: best 0.010 ms, untuned 0.020 ms)",
                            "time left 45 s"]
    with _bars(60.0, False) as show:
        show(1, 2, kernel, 15.0)
        assert progress.active() is None
