"""edge/install.sh --destdir: a staged tree that names its final place (issue 11, item 13).

A system image is built by writing the agent under a staging directory (``--destdir``), and
the image then runs with that directory as its ``/``. So nothing inside the staged files may
name the staging directory: not the entry points' ``#!`` lines, not ``pyvenv.cfg``, not the
unit, not the compiled bytecode. Two stagings, each a real install (a fresh environment and
``pip install`` of this checkout, about 30 s):

- ``--destdir`` alone, the image case: every path names ``/opt/shopfloor``. The tree then runs
  at ``/opt/shopfloor`` in a private mount namespace (the host's ``/opt`` is not touched), where
  the machine allows one.
- ``--destdir`` with ``--prefix``: the tree names the prefix, and runs once moved there. This
  needs no privilege, so it runs everywhere.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from test_install import UNIT_SOURCE, assert_unit_names, copy_checkout, ok, run_script

pytestmark = pytest.mark.integration

OPT = Path("opt/shopfloor")
CONFIG = Path("etc/shopfloor/agent.toml")


@pytest.fixture(scope="module")
def checkout(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """This checkout as it is now: others may edit the real one between two installs."""
    return copy_checkout(tmp_path_factory.mktemp("snapshot") / "checkout")


def stage(checkout: Path, destdir: Path, *extra: str) -> str:
    return ok(run_script(checkout / "edge" / "install.sh", "--destdir", str(destdir), *extra,
                         "--no-systemctl", "--no-apt", "--profile", "raspberry-pi",
                         "--python", sys.executable))


def files_naming(root: Path, text: str) -> list[str]:
    """Every file under ``root`` (bytecode and libraries included) whose bytes hold ``text``."""
    needle = text.encode()
    return sorted(str(p.relative_to(root)) for p in root.rglob("*")
                  if p.is_file() and not p.is_symlink() and needle in p.read_bytes())


def run(*argv: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(a) for a in argv], capture_output=True, text=True, timeout=300,
                          check=False)


def entry_point_interpreter(script: Path) -> str:
    """The interpreter a pip entry point runs: its ``#!`` line, or, for a path too long for
    one, the ``exec`` line of pip's ``/bin/sh`` trampoline."""
    lines = script.read_text().splitlines()
    if lines[0] != "#!/bin/sh":
        return lines[0].removeprefix("#!")
    command = lines[1].removeprefix("'''exec' ")  # then: INTERPRETER "$0" "$@"
    return command.split('"')[1] if command.startswith('"') else command.split()[0]


@pytest.fixture(scope="module")
def image(checkout: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """A tree staged for ``/``, and what install.sh said."""
    destdir = tmp_path_factory.mktemp("image")
    return destdir, stage(checkout, destdir)


def test_a_staged_image_names_opt_and_never_the_staging_directory(
    image: tuple[Path, str],
) -> None:
    destdir, out = image
    venv = destdir / OPT / "venv"
    assert sorted(p.name for p in destdir.iterdir()) == ["etc", "opt"]
    # The unit is the shipped one, byte for byte: it names /opt and /etc already.
    unit = destdir / "etc/systemd/system" / UNIT_SOURCE.name
    assert unit.read_bytes() == UNIT_SOURCE.read_bytes()
    assert entry_point_interpreter(venv / "bin" / "shopfloor") == "/opt/shopfloor/venv/bin/python"
    # The environment's own pip (from ensurepip) names python3.X.
    assert entry_point_interpreter(venv / "bin" / "pip").startswith("/opt/shopfloor/venv/bin/")
    config = dict(line.split(" = ", 1) for line in (venv / "pyvenv.cfg").read_text().splitlines())
    assert config["command"].endswith(" -m venv /opt/shopfloor/venv")
    assert 'VIRTUAL_ENV="/opt/shopfloor/venv"' in (venv / "bin" / "activate").read_text()
    assert files_naming(destdir, str(destdir)) == []
    for doc in ("README.md", "CHANGELOG.md", "LICENSE", "uninstall.sh"):
        assert (destdir / OPT / doc).is_file(), doc
    # What the output tells to do next names the device's paths.
    assert "/opt/shopfloor/venv/bin/shopfloor check --config /etc/shopfloor/agent.toml" in out
    assert f"once {destdir} is the target's /" in out
    # The staged environment also runs where it is (install.sh checks the config with it).
    version = run(venv / "bin" / "python", "-m", "shopfloor", "--version")
    assert version.returncode == 0, version.stderr
    assert version.stdout.startswith("shopfloor ")


def mount_namespace_refusal() -> str | None:
    """Why no private mount namespace can be had here, or None when one can."""
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        return "needs root and unshare(1)"
    if Path(sys.base_prefix).resolve().is_relative_to("/opt"):
        return "the interpreter lives under /opt, which the namespace covers"
    probe = run("unshare", "--mount", "--propagation", "private",
                "sh", "-c", "mount -t tmpfs tmpfs /opt")
    return None if probe.returncode == 0 else f"no mount namespace: {probe.stderr.strip()}"


def test_the_staged_image_runs_at_opt_shopfloor(image: tuple[Path, str]) -> None:
    refusal = mount_namespace_refusal()
    if refusal:
        pytest.skip(refusal)
    destdir, _ = image
    # In a private mount namespace: an empty /opt, the staged tree bound at /opt/shopfloor.
    script = """set -e
mount -t tmpfs tmpfs /opt
mkdir /opt/shopfloor
mount --bind "$1" /opt/shopfloor
/opt/shopfloor/venv/bin/shopfloor --version
/opt/shopfloor/venv/bin/shopfloor check --config "$2"
"""
    done = run("unshare", "--mount", "--propagation", "private", "sh", "-c", script, "sh",
               destdir / OPT, destdir / CONFIG)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("shopfloor ")
    assert ": ok (" in done.stdout


def test_destdir_and_prefix_stage_a_tree_that_runs_once_moved_to_the_prefix(
    checkout: Path, tmp_path: Path
) -> None:
    destdir = tmp_path / "stage"
    final = tmp_path / "final"
    out = stage(checkout, destdir, "--prefix", str(final))
    staged = destdir / final.relative_to("/")
    assert not final.exists()  # nothing is written outside the staging directory
    assert all(p == staged or p in staged.parents or staged in p.parents
               for p in destdir.rglob("*"))
    assert_unit_names(staged / "etc/systemd/system" / UNIT_SOURCE.name, str(final))
    venv = staged / OPT / "venv"
    assert entry_point_interpreter(venv / "bin" / "shopfloor") == f"{final}/{OPT}/venv/bin/python"
    assert f"-m venv {final}/{OPT}/venv" in (venv / "pyvenv.cfg").read_text()
    assert files_naming(destdir, str(destdir)) == []
    assert f"uninstall  {final}/{OPT}/uninstall.sh --prefix {final}" in out

    # Moved to its final place, it runs from its own entry points.
    staged.rename(final)
    version = run(final / OPT / "venv" / "bin" / "shopfloor", "--version")
    assert version.returncode == 0, version.stderr
    assert version.stdout.startswith("shopfloor ")
    check = run(final / OPT / "venv" / "bin" / "shopfloor", "check", "--config", final / CONFIG)
    assert check.returncode == 0, check.stderr

    # Staged again over the same tree: nothing to do, nothing rewritten.
    final.rename(staged)
    again = stage(checkout, destdir, "--prefix", str(final))
    assert "nothing changed" in again
    assert files_naming(destdir, str(destdir)) == []
