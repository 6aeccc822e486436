"""``./dev.sh demo`` installs only what the demo needs (issue 11, item 15).

dev.sh runs on a copy of itself, with every command it calls to install something replaced by a
stub on ``PATH`` that writes what it was asked into a log: ``dpkg-query`` (which answers from
what the stub ``apt-get`` installed), ``apt-get``, ``sudo``, ``systemctl``, and ``python3``,
whose ``-m venv`` makes an environment of stubs (``python -m pip``, ``shopfloor``, ``ruff``,
``mypy``). Nothing is installed and nothing is downloaded.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from test_install import ROOT

LOG_LINE = 'printf "%s\\n" "$(basename "$0") $*" >>"$STUB_LOG"\n'
STUBS = {
    "apt-get": LOG_LINE + """
if [ "$1" = install ]; then
  for a in "$@"; do case $a in -*|install) ;; *) echo "$a" >>"$STUB_STATE/installed" ;; esac; done
fi
""",
    "dpkg-query": """
for p in "$@"; do :; done   # the package is the last argument
if grep -qx "$p" "$STUB_STATE/installed" 2>/dev/null; then printf 'install ok installed'; fi
""",
    "sudo": LOG_LINE + 'exec "$@"\n',
    "systemctl": LOG_LINE,
    # Venv support is there; -m venv DIR makes an environment of stubs.
    "python3": """
if [ "$1" = -m ] && [ "$2" = venv ]; then
  printf "%s\\n" "python3 $*" >>"$STUB_LOG"
  mkdir -p "$3/bin"
  for tool in python shopfloor ruff mypy; do
    printf '#!/bin/sh\\nprintf "%%s\\\\n" "venv-%s $*" >>"$STUB_LOG"\\n' "$tool" >"$3/bin/$tool"
    chmod +x "$3/bin/$tool"
  done
fi
""",
}


def dev_sh(tmp_path: Path, *args: str) -> list[str]:
    """Run a copy of dev.sh with the stubs; the log of what it asked for."""
    checkout = tmp_path / "checkout"
    if not checkout.exists():
        checkout.mkdir()
        for name in ("dev.sh", "pyproject.toml"):
            shutil.copy2(ROOT / name, checkout / name)
        stubs = tmp_path / "stubs"
        stubs.mkdir()
        for name, body in STUBS.items():
            (stubs / name).write_text("#!/bin/bash\n" + body)
            (stubs / name).chmod(0o755)
        (tmp_path / "state").mkdir()
    log = tmp_path / "log"
    log.write_text("")
    env = dict(os.environ, PATH=f"{tmp_path / 'stubs'}:/usr/bin:/bin",
               STUB_LOG=str(log), STUB_STATE=str(tmp_path / "state"))
    done = subprocess.run(["bash", str(checkout / "dev.sh"), *args], env=env,
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    return log.read_text().splitlines()


def apt_installs(log: list[str]) -> list[str]:
    return [p for line in log if line.startswith("apt-get install")
            for p in line.split()[2:] if not p.startswith("-")]


def pip_installs(log: list[str]) -> list[str]:
    return [line.removeprefix("venv-python -m pip install ") for line in log
            if line.startswith("venv-python -m pip install")]


def test_demo_installs_mosquitto_and_the_package_only(tmp_path: Path) -> None:
    log = dev_sh(tmp_path, "demo", "--duration", "5")
    assert apt_installs(log) == ["mosquitto"]  # no Prometheus, openssl or systemd
    assert pip_installs(log) == ["-q -e ."]  # no [dev] extras, no pip upgrade
    assert log[-1] == "venv-shopfloor demo --duration 5"

    # A second run installs nothing.
    log = dev_sh(tmp_path, "demo")
    assert apt_installs(log) == []
    assert pip_installs(log) == []
    assert log == ["venv-shopfloor demo"]


def test_tests_still_install_everything_and_a_demo_after_them_installs_nothing(
    tmp_path: Path,
) -> None:
    log = dev_sh(tmp_path, "test", "-q")
    assert apt_installs(log) == ["mosquitto", "prometheus", "openssl", "systemd"]
    assert pip_installs(log) == ["-q --upgrade pip", "-q -e .[dev]"]
    assert log[-3:] == ["venv-ruff check src tests benchmarks", "venv-mypy ",
                        "venv-python -m pytest -q"]
    # The test environment has the package: the demo uses it as it is.
    assert dev_sh(tmp_path, "demo") == ["venv-shopfloor demo"]
