"""edge/build-wheelhouse.sh and install.sh --wheelhouse: installing with no network (issue 11,
item 14).

The wheelhouse is built for this machine's architecture and Python only (one target of the
six the script builds by default; the others differ only in pip's ``--platform``,
``--python-version`` and ``--abi``), from a snapshot of this checkout, with the machine's own
pip configuration: pip downloads the wheels (or takes them from its cache). The install then
runs with every index unreachable - no pip configuration, ``PIP_INDEX_URL`` and the proxies
pointing at a loopback port that refuses connections - so it succeeds only if install.sh reads
nothing but the wheelhouse.
"""

from __future__ import annotations

import hashlib
import os
import platform
import socket
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from test_install import ROOT, copy_checkout, ok, run_script

pytestmark = pytest.mark.integration

BUILD = ROOT / "edge" / "build-wheelhouse.sh"
ARCH = platform.machine()
PYTHON_VERSION = f"{sys.version_info.major}.{sys.version_info.minor}"
# What the agent needs (pyproject.toml's dependencies and theirs), as wheel names start.
NEEDED = ("shopfloor-", "numpy-", "numba-", "llvmlite-", "river-", "scipy-", "paho_mqtt-",
          "prometheus_client-")


@pytest.fixture(scope="module")
def checkout(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """This checkout as it is now: the wheelhouse must be built from the one installed."""
    return copy_checkout(tmp_path_factory.mktemp("snapshot") / "checkout")


@pytest.fixture(scope="module")
def wheelhouse(checkout: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    if ARCH not in ("x86_64", "aarch64"):
        pytest.skip(f"no manylinux wheels of numba for {ARCH}")
    out = tmp_path_factory.mktemp("build") / "wheelhouse"
    ok(run_script(checkout / "edge" / "build-wheelhouse.sh", "--arch", ARCH,
                  "--python-version", PYTHON_VERSION, "--python", sys.executable, str(out)))
    return out


@pytest.fixture
def offline() -> Iterator[dict[str, str]]:
    """An environment in which every index is unreachable: a loopback port that refuses."""
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))  # bound, never listening: connections are refused
        nowhere = f"http://127.0.0.1:{closed.getsockname()[1]}"
        env = {k: v for k, v in os.environ.items()
               if not k.startswith("PIP_") and not k.lower().endswith("_proxy")}
        env.update(PIP_CONFIG_FILE=os.devnull, PIP_INDEX_URL=f"{nowhere}/simple",
                   PIP_EXTRA_INDEX_URL=f"{nowhere}/extra", PIP_RETRIES="0", PIP_TIMEOUT="2",
                   http_proxy=nowhere, https_proxy=nowhere, HTTP_PROXY=nowhere,
                   HTTPS_PROXY=nowhere)
        yield env


def install(checkout: Path, prefix: Path, wheelhouse: Path,
            env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return run_script(checkout / "edge" / "install.sh", "--prefix", str(prefix),
                      "--wheelhouse", str(wheelhouse), "--no-systemctl", "--no-apt",
                      "--profile", "industrial-pc", "--python", sys.executable, env=env)


def manifest(wheelhouse: Path) -> tuple[dict[str, str], dict[str, str]]:
    """SHA256SUMS as its header fields and file -> sha256."""
    fields, sums = {}, {}
    for line in (wheelhouse / "SHA256SUMS").read_text().splitlines():
        if line.startswith("# ") and ": " in line:
            key, value = line[2:].split(": ", 1)
            fields[key] = value
        elif not line.startswith("#"):
            digest, name = line.split("  ", 1)
            sums[name] = digest
    return fields, sums


def copy_with(wheelhouse: Path, destination: Path, replaced: dict[str, bytes]) -> Path:
    """The wheelhouse again, hard-linked (no 100 MB copy), with some files replaced."""
    destination.mkdir()
    for f in wheelhouse.iterdir():
        if f.name in replaced:
            (destination / f.name).write_bytes(replaced[f.name])
        else:
            os.link(f, destination / f.name)
    return destination


# --- the script's arguments -------------------------------------------------------------------


def test_help_names_the_options() -> None:
    text = ok(run_script(BUILD, "--help"))
    for option in ("--arch", "--python-version", "--glibc", "--python", "DIR"):
        assert option in text


@pytest.mark.parametrize(
    "args",
    [["--arch", "armv7l"], ["--python-version", "3.10"], ["--python-version", "3"],
     ["--glibc", "2.5"], ["--bogus"], [], ["--arch"]],
    ids=["arch", "old-python", "bad-version", "old-glibc", "unknown", "no-dir", "arch-value"],
)
def test_bad_arguments_exit_2_and_write_nothing(args: list[str], tmp_path: Path) -> None:
    out = tmp_path / "wheelhouse"
    done = run_script(BUILD, *([str(out)] if args != [] else []), *args)
    assert done.returncode == 2, done.stderr
    assert "--help" in done.stderr
    assert list(tmp_path.iterdir()) == []


def test_a_directory_with_other_files_is_refused(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("mine")
    done = run_script(BUILD, "--arch", "x86_64", "--python", sys.executable, str(tmp_path))
    assert done.returncode == 1
    assert "no wheelhouse of this script" in done.stderr
    assert [p.name for p in tmp_path.iterdir()] == ["notes.txt"]


# --- the wheelhouse ---------------------------------------------------------------------------


def test_the_wheelhouse_holds_every_wheel_with_its_sha256(wheelhouse: Path) -> None:
    fields, sums = manifest(wheelhouse)
    files = sorted(p.name for p in wheelhouse.iterdir() if p.name != "SHA256SUMS")
    assert sorted(sums) == files
    for name, digest in sums.items():
        assert hashlib.sha256((wheelhouse / name).read_bytes()).hexdigest() == digest, name
    for prefix in NEEDED:
        assert any(name.startswith(prefix) for name in files), prefix
    tag = f"cp{PYTHON_VERSION.replace('.', '')}"
    for name in files:  # pure Python, or a binary for this target
        python, abi, platforms = name.removesuffix(".whl").split("-")[-3:]
        assert (abi, platforms) == ("none", "any") or (
            python == tag and abi in (tag, "abi3") and "manylinux" in platforms
            and platforms.endswith(ARCH)), name
    assert fields["arch"] == ARCH
    assert fields["python"] == PYTHON_VERSION
    assert fields["shopfloor"] in files
    # sha256sum reads the manifest as it is, header included.
    check = subprocess.run(["sha256sum", "--check", "--strict", "--quiet", "SHA256SUMS"],
                           cwd=wheelhouse, capture_output=True, text=True, check=False)
    assert check.returncode == 0, check.stdout + check.stderr


def test_the_shopfloor_wheel_carries_the_licence_and_the_project_urls(
    wheelhouse: Path,
) -> None:
    fields, _ = manifest(wheelhouse)
    with zipfile.ZipFile(wheelhouse / fields["shopfloor"]) as wheel:
        names = wheel.namelist()
        info = next(n.split("/")[0] for n in names if n.endswith(".dist-info/METADATA"))
        metadata = wheel.read(f"{info}/METADATA").decode()
        licence = wheel.read(f"{info}/licenses/LICENSE")
    assert "License-Expression: Apache-2.0" in metadata
    assert licence == (ROOT / "LICENSE").read_bytes()
    for key in ("Homepage", "Documentation", "Changelog", "Issues"):
        assert f"Project-URL: {key}, " in metadata, key


# --- installing from it, offline ------------------------------------------------------------


def test_install_from_the_wheelhouse_needs_no_network(
    checkout: Path, wheelhouse: Path, offline: dict[str, str], tmp_path: Path
) -> None:
    prefix = tmp_path / "root"
    out = ok(install(checkout, prefix, wheelhouse, offline))
    fields, sums = manifest(wheelhouse)
    assert f"installing {fields['shopfloor']} from {wheelhouse} (pip --no-index" in out
    assert "package: installed shopfloor" in out
    shopfloor = prefix / "opt/shopfloor/venv/bin/shopfloor"
    version = subprocess.run([str(shopfloor), "--version"], capture_output=True, text=True,
                             check=False)
    assert version.returncode == 0, version.stderr
    # Every distribution in the environment came from the wheelhouse, at its version there.
    installed = subprocess.run(
        [str(prefix / "opt/shopfloor/venv/bin/python"), "-m", "pip", "list", "--format=freeze",
         "--exclude", "pip", "--exclude", "setuptools"],
        capture_output=True, text=True, check=False, env=offline)
    assert installed.returncode == 0, installed.stderr
    wheels = {"-".join(name.split("-")[:2]).lower().replace("_", "-") for name in sums}
    for line in installed.stdout.split():
        name, version_number = line.split("==")
        assert f"{name.lower().replace('_', '-')}-{version_number}" in wheels, line

    # Again: nothing to do, still no network.
    assert "nothing changed" in ok(install(checkout, prefix, wheelhouse, offline))


def test_a_damaged_wheelhouse_is_refused_before_anything_is_written(
    checkout: Path, wheelhouse: Path, offline: dict[str, str], tmp_path: Path
) -> None:
    _, sums = manifest(wheelhouse)
    victim = next(name for name in sums if name.startswith("paho_mqtt-"))
    damaged = copy_with(wheelhouse, tmp_path / "damaged",
                        {victim: (wheelhouse / victim).read_bytes()[:-100]})
    prefix = tmp_path / "root"
    done = install(checkout, prefix, damaged, offline)
    assert done.returncode == 1
    assert "differ from their sha256 in SHA256SUMS" in done.stderr
    assert victim in done.stderr  # sha256sum names the file
    assert not prefix.exists()


def test_a_wheelhouse_of_another_checkout_is_refused(
    checkout: Path, wheelhouse: Path, offline: dict[str, str], tmp_path: Path
) -> None:
    text = (wheelhouse / "SHA256SUMS").read_text()
    fields, _ = manifest(wheelhouse)
    other = text.replace(f"# source: {fields['source']}", "# source: " + "0" * 64)
    assert other != text
    elsewhere = copy_with(wheelhouse, tmp_path / "other", {"SHA256SUMS": other.encode()})
    prefix = tmp_path / "root"
    done = install(checkout, prefix, elsewhere, offline)
    assert done.returncode == 1
    assert "built from another checkout" in done.stderr
    assert not prefix.exists()


def test_a_wheelhouse_for_another_python_is_refused(
    checkout: Path, wheelhouse: Path, offline: dict[str, str], tmp_path: Path
) -> None:
    text = (wheelhouse / "SHA256SUMS").read_text()
    other = text.replace(f"# python: {PYTHON_VERSION}\n", "# python: 3.99\n")
    assert other != text
    elsewhere = copy_with(wheelhouse, tmp_path / "other", {"SHA256SUMS": other.encode()})
    prefix = tmp_path / "root"
    done = install(checkout, prefix, elsewhere, offline)
    assert done.returncode == 1
    assert f"--python-version {PYTHON_VERSION}" in done.stderr
    assert not prefix.exists()
