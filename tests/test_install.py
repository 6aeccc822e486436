"""edge/install.sh and edge/uninstall.sh on a scratch root: the acceptance of issue 5, part 3.

Everything happens under a temporary ``--prefix`` with ``--no-systemctl`` and ``--no-apt``:
nothing outside it is written (pip's download cache aside) and neither systemctl nor apt-get
runs. The install is the real one a device gets: a fresh virtual environment and ``pip
install`` of this checkout with the machine's own pip configuration, about 25 s here (a local
package index; a first run against PyPI downloads ~120 MB into pip's cache). It is done once:
the acceptance is a sequence - install, edit, run, install again, upgrade, uninstall, purge -
where each step starts from the one before, so one test walks through it.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import stat
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from broker import LinkFactory, Mosquitto, link_settings, wait_until
from shopfloor.receiving.codecs import encode_json_scalar

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[1]
INSTALL = ROOT / "edge" / "install.sh"
UNINSTALL = ROOT / "edge" / "uninstall.sh"
UNIT_SOURCE = ROOT / "deploy" / "systemd" / "shopfloor-agent.service"
PROFILE = ROOT / "edge" / "profiles" / "raspberry-pi.toml"
OPTIONS = ("--prefix", "--destdir", "--wheelhouse", "--no-systemctl", "--no-apt", "--profile",
           "--python", "--help")
METRICS_AT = re.compile(r"metrics at http://127\.0\.0\.1:(\d+)/metrics")
T0 = 1_750_000_000.0  # sample timestamps: any fixed epoch time will do


class Layout:
    """Where install.sh puts things under ``prefix``."""

    def __init__(self, prefix: Path) -> None:
        self.prefix = prefix
        self.opt = prefix / "opt" / "shopfloor"
        self.shopfloor = self.opt / "venv" / "bin" / "shopfloor"
        self.config = prefix / "etc" / "shopfloor" / "agent.toml"
        self.password = prefix / "etc" / "shopfloor" / "mqtt-password"
        self.unit = prefix / "etc" / "systemd" / "system" / "shopfloor-agent.service"
        self.state = prefix / "var" / "lib" / "shopfloor"
        self.cache = prefix / "var" / "cache" / "shopfloor"


def run_script(
    script: Path, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["bash", str(script), *args], capture_output=True, text=True,
                          timeout=600, check=False, env=env)


def unit_directives(text: str) -> list[str]:
    """The lines of a unit file that systemd reads (no comments, no blank lines)."""
    return [line for line in text.splitlines() if line.strip() and not line.startswith("#")]


def assert_unit_names(unit: Path, root: str) -> None:
    """``unit`` is the shipped unit with its paths under ``root`` ("" for /), nothing else."""
    source = UNIT_SOURCE.read_text()
    written = unit.read_text()
    expected = {
        "Documentation": f"file://{root}/opt/shopfloor/README.md",
        "ExecStart": f"{root}/opt/shopfloor/venv/bin/shopfloor run"
                     f" --config {root}/etc/shopfloor/agent.toml",
        "LoadCredential": f"mqtt-password:{root}/etc/shopfloor/mqtt-password",
    }
    for key, value in expected.items():
        assert f"\n{key}={value}\n" in written, key
    assert len(unit_directives(written)) == len(unit_directives(source))
    for old, new in zip(unit_directives(source), unit_directives(written), strict=True):
        assert old == new or old.split("=", 1)[0] in expected, (old, new)
    assert [line for line in written.splitlines() if line.startswith("#")] == [
        line for line in source.splitlines() if line.startswith("#")]  # comments as shipped


def install(checkout: Path, prefix: Path) -> subprocess.CompletedProcess[str]:
    # The test's own interpreter (3.11+ by requires-python), whatever python3 is on PATH.
    return run_script(checkout / "edge" / "install.sh", "--prefix", str(prefix),
                      "--no-systemctl", "--no-apt", "--profile", "raspberry-pi",
                      "--python", sys.executable)


def uninstall(prefix: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return run_script(UNINSTALL, "--prefix", str(prefix), "--no-systemctl", *extra)


def ok(done: subprocess.CompletedProcess[str]) -> str:
    assert done.returncode == 0, f"exit {done.returncode}\n{done.stdout}\n{done.stderr}"
    return done.stdout


def snapshot(root: Path) -> dict[str, tuple[int, int, int, str]]:
    """Every path under ``root``: mode, size, modification time (ns), symlink target."""
    out = {}
    for path in [root, *root.rglob("*")]:
        st = path.lstat()
        target = os.readlink(path) if path.is_symlink() else ""
        out[str(path.relative_to(root))] = (st.st_mode, st.st_size, st.st_mtime_ns, target)
    return out


def files_under(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if not p.is_dir())


def copy_checkout(destination: Path) -> Path:
    """What install.sh reads of a checkout, copied (no caches, no .venv)."""
    junk = shutil.ignore_patterns("__pycache__", "*.egg-info", "*.nbi", "*.nbc")
    destination.mkdir()
    for name in ("pyproject.toml", "README.md", "LICENSE", "CHANGELOG.md"):
        shutil.copy2(ROOT / name, destination / name)
    for name in ("src", "edge", "deploy"):
        shutil.copytree(ROOT / name, destination / name, ignore=junk)
    return destination


def scrape(port: int) -> dict[str, float]:
    """``/metrics`` as ``name{label=value,...}`` -> value."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as reply:
        text = reply.read().decode()
    samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            labels = ",".join(f"{k}={v}" for k, v in sorted(s.labels.items()))
            samples[f"{s.name}{{{labels}}}"] = s.value
    return samples


class InstalledAgent:
    """``shopfloor run`` from the installed environment, as the unit starts it."""

    def __init__(self, layout: Layout, log_file: Path) -> None:
        self.log_file = log_file
        env = dict(os.environ)
        # What systemd's StateDirectory= and the unit's Environment= give the service.
        env["STATE_DIRECTORY"] = str(layout.state)
        env["NUMBA_CACHE_DIR"] = str(layout.cache)
        with log_file.open("wb") as out:
            self.proc = subprocess.Popen(
                [str(layout.shopfloor), "run", "--config", str(layout.config)],
                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
            )

    def log(self) -> str:
        return self.log_file.read_text(errors="replace")

    def metrics_port(self, timeout: float = 120.0) -> int:
        # A cold start compiles the kernels first (a few seconds here, minutes on a Pi).
        found = wait_until(lambda: bool(METRICS_AT.search(self.log()))
                           or self.proc.poll() is not None, timeout)
        match = METRICS_AT.search(self.log())
        assert found, f"no metrics endpoint in the log:\n{self.log()}"
        assert match, f"the agent exited:\n{self.log()}"
        return int(match.group(1))

    def stop(self) -> int:
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(60)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


@pytest.fixture
def agents() -> Iterator[list[InstalledAgent]]:
    started: list[InstalledAgent] = []
    yield started
    for agent in started:
        agent.kill()


# --- arguments -------------------------------------------------------------------------------


@pytest.mark.parametrize("script", [INSTALL, UNINSTALL], ids=["install", "uninstall"])
def test_help_names_the_options(script: Path) -> None:
    text = ok(run_script(script, "--help"))
    wanted = OPTIONS if script == INSTALL else ("--prefix", "--no-systemctl", "--purge", "--help")
    for option in wanted:
        assert option in text


@pytest.mark.parametrize(
    ("script", "args"),
    [
        (INSTALL, ["--bogus"]),
        (INSTALL, ["--profile", "toaster"]),
        (INSTALL, ["--prefix"]),
        (INSTALL, ["--profile"]),
        (INSTALL, ["--destdir"]),
        (INSTALL, ["--wheelhouse"]),
        (INSTALL, ["--destdir", ""]),
        (INSTALL, ["--prefix", "/srv/with space"]),
        (UNINSTALL, ["--bogus"]),
        (UNINSTALL, ["--prefix"]),
    ],
    ids=["install-unknown", "install-profile", "install-prefix-value", "install-profile-value",
         "install-destdir-value", "install-wheelhouse-value", "install-destdir-empty",
         "install-prefix-space", "uninstall-unknown", "uninstall-prefix-value"],
)
def test_bad_arguments_exit_2_and_touch_nothing(
    script: Path, args: list[str], tmp_path: Path
) -> None:
    prefix = tmp_path / "root"
    # A scratch root goes first, so that an option left without its value stays last.
    scratch = ["--no-systemctl"]
    if "--prefix" not in args:
        scratch += ["--prefix", str(prefix)]
    elif script == INSTALL:
        scratch += ["--destdir", str(prefix)]
    done = subprocess.run(["bash", str(script), *scratch, *args],
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 2, done.stderr
    assert "--help" in done.stderr
    assert not prefix.exists()


def test_a_checkout_without_the_unit_fails_naming_it(tmp_path: Path) -> None:
    checkout = tmp_path / "checkout"
    (checkout / "edge").mkdir(parents=True)
    shutil.copy2(INSTALL, checkout / "edge" / "install.sh")
    shutil.copy2(ROOT / "pyproject.toml", checkout / "pyproject.toml")
    prefix = tmp_path / "root"
    done = install(checkout, prefix)
    assert done.returncode == 1
    assert "deploy/systemd/shopfloor-agent.service" in done.stderr
    assert not prefix.exists()  # checked before anything is written


# --- the acceptance, in order ------------------------------------------------------------------


def test_install_run_reinstall_upgrade_uninstall(
    tmp_path: Path, mosquitto: Mosquitto, make_link: LinkFactory, agents: list[InstalledAgent]
) -> None:
    prefix = tmp_path / "root"
    at = Layout(prefix)
    # This checkout as it is now: others may edit the real one between two installs.
    checkout = copy_checkout(tmp_path / "checkout")

    # 1. A fresh install: environment, package, config from the profile, unit, closing words.
    out = ok(install(checkout, prefix))
    assert "config: wrote" in out
    assert at.shopfloor.is_file()
    assert at.config.read_bytes() == (checkout / PROFILE.relative_to(ROOT)).read_bytes()
    assert_unit_names(at.unit, str(prefix))  # --prefix: the unit names where it runs from
    assert at.password.read_bytes() == b""
    assert stat.S_IMODE(at.password.stat().st_mode) == 0o600
    assert stat.S_IMODE(at.config.stat().st_mode) == 0o644
    assert "systemctl status shopfloor-agent" in out
    assert "http://127.0.0.1:9817/metrics" in out  # read from the written config
    assert not at.state.exists()  # systemd's StateDirectory= makes it, not the installer
    # The unedited result, to check later that uninstall removes an unchanged config.
    pristine = tmp_path / "pristine"
    shutil.copytree(prefix, pristine, symlinks=True,
                    ignore=lambda d, names: ["venv"] if d == str(at.opt) else [])

    # 2. Edit the installed config: this broker, any free metrics port.
    text = at.config.read_text()
    assert "port = 1883" in text
    assert "port = 9817" in text
    edited = (text.replace("port = 1883", f"port = {mosquitto.port}")
              .replace("port = 9817", "port = 0"))
    at.config.write_text(edited)

    # 3. The installed agent passes the check, starts, scores and serves metrics.
    check = subprocess.run([str(at.shopfloor), "check", "--config", str(at.config)],
                           capture_output=True, text=True, timeout=120, check=False)
    assert check.returncode == 0, check.stderr
    agent = InstalledAgent(at, tmp_path / "agent.log")
    agents.append(agent)
    port = agent.metrics_port()
    # press-1's force, whatever other labels (the topic's site and line) the series carries.
    scored = re.compile(r"shopfloor_signal_samples_scored_total\{(.*,)?asset=press-1,"
                        r"(.*,)?signal=force(,.*)?\}")
    publisher = make_link(link_settings(mosquitto, "install-test-publisher"))
    assert publisher.wait_ready(10.0)
    sent = 0

    def scored_yet() -> bool:
        # Until the agent has subscribed, the broker drops what is sent: send again.
        nonlocal sent
        publisher.publish("plant/berlin/line-2/press-1/force",
                          encode_json_scalar(T0 + sent, 10.0 + sent % 3))
        sent += 1
        return sum(v for k, v in scrape(port).items() if scored.fullmatch(k)) >= 1.0

    assert wait_until(scored_yet, 60.0), f"nothing scored:\n{agent.log()}"
    assert scrape(port)["shopfloor_mqtt_connected{}"] == 1.0
    assert agent.stop() == 0, agent.log()
    checkpoint = at.state / "pipelines.ckpt"
    assert checkpoint.is_file(), agent.log()

    # 4. A second run changes nothing, and says so; the edited config is still there.
    before = snapshot(prefix)
    out = ok(install(checkout, prefix))
    assert "nothing changed" in out
    assert "config: kept" in out
    assert snapshot(prefix) == before
    assert at.config.read_text() == edited

    # A config that fails the check stops the install (before systemd would start it), named.
    assert "queue_size = 5000" in edited
    at.config.write_text(edited.replace("queue_size = 5000", "queue_size = 1"))
    done = install(checkout, prefix)
    assert done.returncode == 1
    assert f"{at.config}:" in done.stderr
    assert "agent.queue_size" in done.stderr
    at.config.write_text(edited)

    # 5. An upgrade from a changed checkout reinstalls the package, keeps config and state.
    marker = "# upgraded by test_install\n"
    with (checkout / "src" / "shopfloor" / "__init__.py").open("a") as fh:
        fh.write(marker)
    state_before = snapshot(at.state)
    out = ok(install(checkout, prefix))
    assert "package: reinstalled shopfloor" in out
    installed = list((at.opt / "venv" / "lib").glob("python3*/site-packages/shopfloor"))
    assert len(installed) == 1
    assert (installed[0] / "__init__.py").read_text().endswith(marker)
    assert at.config.read_text() == edited
    assert snapshot(at.state) == state_before

    # 6. Uninstall removes what install added; the edited config and the state stay.
    out = ok(uninstall(prefix))
    assert not at.opt.exists()
    assert not at.unit.exists()
    assert not at.password.exists()  # empty: as install left it
    assert not at.cache.exists()
    assert at.config.read_text() == edited
    assert "config: kept" in out
    assert checkpoint.is_file()
    assert "state: kept" in out
    assert files_under(prefix) == ["etc/shopfloor/agent.toml", "var/lib/shopfloor/pipelines.ckpt"]

    # 7. Again: nothing left to remove. --purge takes the rest.
    assert "nothing to remove" in ok(uninstall(prefix))
    ok(uninstall(prefix, "--purge"))
    assert files_under(prefix) == []

    # 8. The unedited install of step 1: its config goes with it, nothing is left.
    out = ok(uninstall(pristine))
    assert "config: removed" in out
    assert files_under(pristine) == []
