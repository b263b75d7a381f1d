"""The analysis of one SVHN-sized run fits in 4 GB and takes minutes."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).parent


@pytest.mark.slow
def test_svhn_sized_analysis_fits_the_budget(tmp_path):
    subprocess.run(
        [sys.executable, str(HERE / "scale_analysis.py"), str(tmp_path)], check=True
    )
    results = json.loads((tmp_path / "scale.json").read_text())
    assert len(results) == 6
    for step in results:
        assert step["rc"] == 0, step
        assert step["peak_rss_mb"] < 4096, step
        assert step["wall_s"] < 600, step
