"""The ``shopfloor`` command line.

Every command validates its arguments and inputs first; a bad config, argument or input file
prints one line naming file, line and key, and exits with code 2.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from collections.abc import Sequence
from pathlib import Path

from shopfloor import __version__
from shopfloor.errors import EXIT_USAGE, ConfigError, UserError
from shopfloor.logs import setup_logging

__all__ = ["main"]

log = logging.getLogger("shopfloor")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="shopfloor",
        description="Streaming anomaly detection for shop-floor vibration and quality signals.",
    )
    parser.add_argument("--version", action="version", version=f"shopfloor {__version__}")
    parser.add_argument(
        "--log-level",
        default="info",
        choices=["debug", "info", "warning", "error"],
        help="default: info",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    rp = sub.add_parser(
        "replay",
        help="run the pipeline over a CSV file, scores out",
        description="Run the live pipeline over a CSV and write one scored row per input row.",
    )
    rp.add_argument("data", help="CSV with a time column and numeric signal columns")
    rp.add_argument(
        "--config",
        help="pipeline config (TOML); default: every numeric column is "
        "a signal of one asset, plus the asset-level detector",
    )
    rp.add_argument("--out", required=True, help="scores CSV to write ('-' for standard output)")
    rp.add_argument("--plot", help="also draw signals, score, threshold and alarms to this PNG")
    rp.add_argument(
        "--separator",
        help="field separator, one character or 'tab' (default: sniffed from the header: "
        "',', ';' or tab)",
    )
    rp.add_argument(
        "--decimal",
        choices=[".", ","],
        default=".",
        metavar="MARK",
        help="decimal mark of the numbers: '.' (default) or ','; with ',' a '.' in a number is "
        "an error",
    )
    rp.add_argument(
        "--time-column",
        help="name of the time column (default: the first column, after an unnamed row index)",
    )
    rp.add_argument(
        "--time-format",
        metavar="FORMAT",
        help="how the time column is written: a strptime format such as '%%d/%%m/%%Y %%H:%%M:%%S' "
        "(UTC unless it has %%z), or s, ms, us or ns for numbers in that unit (default: ISO 8601, "
        "2004.02.12.10.32.39, 2004/02/12 10:32:39, or epoch numbers, the unit told by their size)",
    )
    rp.add_argument(
        "--time-order",
        choices=["reject", "sort", "stop"],
        default="reject",
        help="a row whose time is earlier than a row before it: reject skips it and counts it "
        "(default), sort sorts all rows by time first (reads the whole file into memory), "
        "stop ends the replay with an error naming its line",
    )
    rp.add_argument(
        "--exclude",
        action="append",
        default=[],
        metavar="COLUMN",
        help="a column that is not a signal, e.g. an id (repeatable)",
    )
    rp.add_argument(
        "--signal-column",
        action="append",
        default=[],
        metavar="COLUMN",
        help="score a label-like column (named like a label, or only 0 and 1 in the first "
        "rows) as a signal all the same; without --config only (repeatable)",
    )
    rp.add_argument(
        "--warmup",
        type=_rows,
        metavar="N",
        help="training rows: the alarms' warm-up ([defaults.alarm] warmup, also over a "
        "--config's defaults), and the F1 report counts rows from N on",
    )
    rp.add_argument("--asset", default="asset", help="asset name without a config (default: asset)")

    ck = sub.add_parser("check", help="validate a config file and exit (2 on errors)")
    ck.add_argument("--config", required=True)

    rn = sub.add_parser("run", help="run the edge agent (what systemd starts)")
    rn.add_argument("--config", required=True, help="agent config (TOML)")

    hp = sub.add_parser(
        "hash-password",
        help="print the [metrics] basic_auth_hash of a password",
        description="Read a password (asked twice on a terminal, else one line of standard "
        "input) and print its salted PBKDF2-SHA256 hash for [metrics] basic_auth_hash.",
    )
    hp.add_argument("--iterations", type=int, default=None,
                    help="PBKDF2 iterations (default: 600000; fewer make a first scrape "
                    "cheaper on a slow device and a guessed password cheaper too)")

    dm = sub.add_parser("demo", help="the whole path on one machine with a simulated plant")
    from shopfloor.tools import demo, simulate

    demo.add_arguments(dm)
    simulate.add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    setup_logging(args.log_level)
    try:
        if args.command == "replay":
            return _replay(args)
        if args.command == "check":
            return _check(args)
        if args.command == "run":
            return _run(args)
        if args.command == "hash-password":
            return _hash_password(args)
        if args.command == "demo":
            from shopfloor.tools.demo import run_demo

            try:
                return run_demo(args)
            except ConfigError as exc:
                if exc.key != "metrics.port":
                    raise
                # The demo writes its own config: the option to change is the command's.
                busy = exc.message.split(":")[0]  # "port N on HOST is already in use"
                print(f"shopfloor demo: error: {busy}: give another port with --metrics-port "
                      f"PORT (0: any free port)", file=sys.stderr)
                return EXIT_USAGE
        if args.command == "simulate":
            from shopfloor.tools.simulate import run as run_simulator

            return run_simulator(args)
    except UserError as exc:
        print(f"shopfloor {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return 130
    parser.error(f"unknown command {args.command}")


def _replay(args: argparse.Namespace) -> int:
    from shopfloor.config import load_config
    from shopfloor.tools.plot import plot_replay
    from shopfloor.tools.replay import ReplayOptions, replay

    # --warmup overrides the config's [defaults.alarm] warmup; a signal or asset that sets its
    # own warm-up keeps it (see ReplayOptions.warmup).
    defaults = {"alarm": {"warmup": args.warmup}} if args.warmup is not None else None
    config = load_config(args.config, defaults=defaults) if args.config else None
    options = ReplayOptions(
        separator=args.separator,
        time_column=args.time_column,
        time_format=args.time_format,
        decimal=args.decimal,
        time_order=args.time_order,
        exclude=tuple(args.exclude),
        asset=args.asset,
        signal_columns=tuple(args.signal_column),
        warmup=args.warmup,
    )

    def notify(message: str) -> None:
        print(f"shopfloor replay: {message}", file=sys.stderr)

    plot_rows: list[object] | None = [] if args.plot else None
    if args.out == "-":
        summary = replay(args.data, sys.stdout, config, options, plot_rows, notify)
    else:
        out = Path(args.out)
        tmp = out.with_name(f".{out.name}.partial")
        try:
            with tmp.open("w", encoding="utf-8", newline="") as fh:
                summary = replay(args.data, fh, config, options, plot_rows, notify)
            tmp.replace(out)  # a failed replay never leaves a half-written scores file behind
        except OSError as exc:
            raise UserError(f"cannot write: {exc.strerror or exc}", file=str(out)) from None
        finally:
            tmp.unlink(missing_ok=True)
    if args.plot:
        plot_replay(args.plot, plot_rows or [], title=Path(args.data).name)
    rejected = sum(sum(r.values()) for r in summary.rejected.values())
    print(
        f"replayed {summary.rows} rows, {len(summary.signals)} signals: "
        f"{summary.anomaly_rows} rows in alarm, "
        f"{sum(summary.alarms_raised.values())} alarms raised "
        f"({sum(summary.adopted.values())} ended by adopting a new baseline), "
        f"{rejected} samples rejected",
        file=sys.stderr,
    )
    p = summary.points
    if p is not None:
        counted = p.tp + p.fp + p.tn + p.fn
        where = f"against {summary.truth_column!r} after a warm-up of {summary.report_from} rows"
        print(
            f"{where} ({counted} rows): F1 {p.f1:.3f}, FAR {p.far:.1f} %, MAR {p.mar:.1f} % "
            f"(TP {p.tp}, FP {p.fp}, TN {p.tn}, FN {p.fn})" if counted else
            f"{where}: no rows left to score",
            file=sys.stderr,
        )
    return 0


def _rows(text: str) -> int:
    """A count of rows for argparse: a whole number >= 0 (argparse exits 2 otherwise)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"must be a whole number of rows, 0 or more; got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(
            f"must be a whole number of rows, 0 or more; got {value}")
    if value > _MAX_ROWS:  # the alarm kernels count in int64
        raise argparse.ArgumentTypeError(f"must be at most {_MAX_ROWS}; got {value}")
    return value


_MAX_ROWS = 2**62


def _check(args: argparse.Namespace) -> int:
    from shopfloor.agent.config import MetricsPortInUseError, load_agent_config, preflight
    from shopfloor.scoring.pipeline import Plant

    config = load_agent_config(args.config)
    try:
        Plant(config.pipeline)
    except ValueError as exc:
        raise UserError(str(exc), file=config.source) from None
    try:
        preflight(config, create=False)
    except MetricsPortInUseError as exc:
        # A config is checked while its agent runs (after an edit, on an upgrade by
        # install.sh), and that agent holds the port: say so, do not fail.
        print(f"shopfloor check: warning: {exc} (fine if it is this agent, running)",
              file=sys.stderr)
    print(f"{args.config}: ok ({len(config.pipeline.signals)} signals, "
          f"{len(config.pipeline.assets)} assets, {len(config.subscriptions)} subscriptions)")
    return 0


def _hash_password(args: argparse.Namespace) -> int:
    import getpass

    from shopfloor.agent.metrics_server import DEFAULT_ITERATIONS, hash_password

    if sys.stdin.isatty():
        password = getpass.getpass("password: ")
        if getpass.getpass("again: ") != password:
            raise UserError("the two passwords differ")
    else:  # a pipe: one line, its newline not part of the password
        password = sys.stdin.readline().removesuffix("\n").removesuffix("\r")
    if not password:
        raise UserError("the password is empty")
    try:
        print(hash_password(password, args.iterations or DEFAULT_ITERATIONS))
    except ValueError as exc:
        raise UserError(f"--iterations: {exc}") from None
    return 0


def _run(args: argparse.Namespace) -> int:
    from shopfloor.agent.config import load_agent_config, preflight
    from shopfloor.agent.run import Agent
    from shopfloor.agent.systemd import Notifier

    notifier = Notifier()  # systemd's Type=notify; a no-op outside systemd
    notifier.status(f"loading {args.config}")
    config = load_agent_config(args.config)
    # Before the kernels compile (tens of seconds on a Pi): a busy port or a state directory
    # that cannot be made fails now, with its key, not after the warm-up.
    preflight(config, create=True)
    try:
        agent = Agent(config)
    except ValueError as exc:  # a password file that vanished since the check, and the like
        raise UserError(str(exc), file=config.source) from None
    stop = threading.Event()
    # Handlers only set the event; the main thread stops things in order.
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    return agent.run(stop, notifier)
