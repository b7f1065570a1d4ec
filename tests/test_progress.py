"""Progress bars: shown only when asked (a terminal, not CI); stages cost nothing otherwise."""

import io

from rich.console import Console

from tensoregg import progress


def test_stages_are_silent_unless_shown(monkeypatch):
    with progress.stage("saturate", total=3) as advance:
        advance()
    assert progress._progress is None
    monkeypatch.setenv("CI", "true")
    assert not progress.wanted()
    with progress.shown():
        assert progress._progress is None


def test_shown_stages_advance_and_finish(monkeypatch):
    out = io.StringIO()
    monkeypatch.setattr("rich.console.Console", lambda **_: Console(file=out, force_terminal=True))
    with progress.shown(True):
        with progress.stage("saturate", total=3) as advance:
            advance()
            task = progress._progress.tasks[-1]
            assert (task.description, task.completed, task.total) == ("saturate", 1, 3)
        with progress.stage("extract"):
            pass
        assert [t.finished for t in progress._progress.tasks] == [True, True]
    assert progress._progress is None and "saturate" in out.getvalue()
