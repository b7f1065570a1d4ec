"""The ``tensoregg`` command reports a user's mistake as one ``error:`` line and a nonzero status,
never a traceback."""

from pathlib import Path

import pytest

from tensoregg.cli import main

EXAMPLE = str(Path(__file__).parent.parent / "examples" / "tinycnn.onnx")


@pytest.mark.parametrize("shape", ["x=3,a", "x=1.5", "x=-1,3", "=1,3", "13"])
def test_bad_input_shape_is_an_error_line(shape, capsys):
    """``--input-shape`` with a non-integer dim escaped as a raw ValueError."""
    assert main(["print", EXAMPLE, "--input-shape", shape]) == 2
    err = capsys.readouterr().err
    assert err.startswith("tensoregg: error: ParameterError: --input-shape") and shape in err
    assert "Traceback" not in err
