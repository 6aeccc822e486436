"""Log lines carry journald priorities under systemd (issue 11, item 12): ``journalctl -p
warning`` found nothing, since every line was filed at the stream's default priority."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

SCRIPT = """
import logging
from shopfloor.logs import setup_logging
setup_logging("debug")
log = logging.getLogger("t")
log.debug("d")
log.info("i")
log.warning("w")
log.error("e")
try:
    1 / 0
except ZeroDivisionError:
    log.exception("boom")
"""


def run(tmp_path: Path, journal: str | None) -> list[str]:
    out = tmp_path / "stderr"
    env = {k: v for k, v in os.environ.items() if k != "JOURNAL_STREAM"}
    with out.open("wb") as stream:
        if journal == "this":
            st = os.fstat(stream.fileno())
            env["JOURNAL_STREAM"] = f"{st.st_dev}:{st.st_ino}"
        elif journal is not None:
            env["JOURNAL_STREAM"] = journal
        subprocess.run([sys.executable, "-c", SCRIPT], stderr=stream, env=env, check=True)
    return out.read_text().splitlines()


def test_under_the_journal_every_line_carries_its_priority(tmp_path: Path) -> None:
    lines = run(tmp_path, "this")
    assert [line[:3] for line in lines[:4]] == ["<7>", "<6>", "<4>", "<3>"]
    assert lines[4].startswith("<3>")
    assert lines[4].endswith("boom")
    traceback = lines[5:]
    assert traceback
    assert all(line.startswith("<3>") for line in traceback)  # each line is an entry of its own


def test_elsewhere_lines_stay_plain(tmp_path: Path) -> None:
    # A stream redirected away from the journal keeps $JOURNAL_STREAM but is another file.
    for journal in (None, "1:2", "garbage"):
        lines = run(tmp_path, journal)
        assert not any(line.startswith("<") for line in lines), journal
        assert lines[0].split()[1] == "DEBUG"
