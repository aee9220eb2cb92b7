"""The distribution: a built wheel installs ``aiport.core`` and friends, never a bare ``core``."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_wheel_installs_the_package_layout(tmp_path: Path) -> None:
    wheels = tmp_path / "wheels"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                    "-w", str(wheels), str(ROOT)], check=True, capture_output=True, timeout=300)
    (wheel,) = wheels.glob("aiport-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "aiport/__init__.py" in names and "aiport/__main__.py" in names
    assert "aiport/core/app.py" in names and "aiport/core/hookspecs.py" in names
    assert "aiport/contrib_providers/cohere_chat/__init__.py" in names
    # every layer of core, and the UI's files as core's package data
    for layer in ("http", "jobs", "execution", "sdk"):
        assert f"aiport/core/{layer}/__init__.py" in names
    assert "aiport/core/data/ui/index.html" in names and "aiport/core/data/ui/static/js/api.js" in names
    assert not any(n.startswith(("core/", "plugins/", "tests/", "aiport/tests/")) for n in names)
    entry_points = next(n for n in names if n.endswith("entry_points.txt"))
    text = zipfile.ZipFile(wheel).read(entry_points).decode()
    assert "[aiport]" in text and "cohere_chat = aiport.contrib_providers.cohere_chat" in text
    assert "aiport = aiport.core.cli:main" in text

    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(target),
                    str(wheel)], check=True, capture_output=True, timeout=300)
    code = ("import aiport.core, aiport.plugins, aiport.contrib_providers, sys;"
            "print(aiport.core.__file__)\n"
            "try:\n import core\nexcept ImportError:\n print('no bare core')\n"
            "else:\n print('BARE CORE IMPORTED')")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path,
                         env={"PYTHONPATH": str(target), "PATH": "/usr/bin:/bin"}, timeout=60)
    assert out.returncode == 0, out.stderr
    first, second = out.stdout.splitlines()
    assert first.startswith(str(target)) and second == "no bare core"
