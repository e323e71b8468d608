"""`colcon build` of the package puts the executables where `ros2 run` looks."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO


def test_colcon_build_installs_ros2_run_layout(tmp_path):
    colcon = Path(sys.executable).with_name("colcon")
    if not colcon.exists():
        pytest.skip("colcon is not installed (pip install colcon-common-extensions)")
    src = tmp_path / "src" / "hybrid_policy"
    shutil.copytree(REPO, src, ignore=shutil.ignore_patterns(
        ".venv", ".git", "build", "install", "log", "data", "runs", "__pycache__", "*.egg-info"))
    out = subprocess.run([str(colcon), "build"], cwd=tmp_path, capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr
    install = tmp_path / "install" / "hybrid_policy"
    assert (install / "lib" / "hybrid_policy" / "hybrid-policy").exists()
    assert (install / "share" / "hybrid_policy" / "package.xml").exists()
    assert (install / "share" / "ament_index" / "resource_index" / "packages" /
            "hybrid_policy").exists()
