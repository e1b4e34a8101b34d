"""The ``mailhook`` command: serve, check-config, explain, standin, version."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sqlite3
import sys
from datetime import datetime, timezone
from pathlib import Path

from mailhook import __version__
from mailhook.config import ConfigError, Settings, config_path, load_settings, masked

EXIT_CONFIG = 2


def main(argv: list[str] | None = None) -> int:
    """Entry point of the console script."""
    parser = _parser()
    args, extra = parser.parse_known_args(argv)
    if getattr(args, "command", None) == "standin":
        args.args = [*extra, *args.args]
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    if not getattr(args, "command", None):
        parser.print_help()
        return EXIT_CONFIG
    _setup_logging(args.log_level)
    return int(args.func(args))


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mailhook",
        description="SMTP content filter that adds TrueConf video conferences to invitations.",
    )
    parser.add_argument("--log-level", default="info",
                        choices=["debug", "info", "warning", "error"], help="log verbosity")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    serve = commands.add_parser("serve", help="run the SMTP filter in the foreground")
    _config_option(serve)
    serve.set_defaults(func=_serve)

    check = commands.add_parser("check-config", help="validate the config and print it, secrets masked")
    _config_option(check)
    check.set_defaults(func=_check_config)

    explain = commands.add_parser(
        "explain", help="say what would happen to a message, without calling TrueConf or writing the store"
    )
    _config_option(explain)
    explain.add_argument("message", help="the message file (.eml)")
    explain.add_argument("--sender", default="",
                         help="envelope sender (default: the message's From address)")
    explain.set_defaults(func=_explain)

    standin = commands.add_parser(
        "standin", help="run the bundled TrueConf API stand-in (for trying mailhook out)",
        add_help=False,
    )
    standin.add_argument("args", nargs=argparse.REMAINDER)
    standin.set_defaults(func=_standin)

    version = commands.add_parser("version", help="print the version")
    version.set_defaults(func=lambda args: print(f"mailhook {__version__}") or 0)
    return parser


def _config_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", "-c", default=None,
                        help="config file (default: $MAILHOOK_CONFIG or /etc/mailhook/mailhook.toml)")


def _setup_logging(level: str) -> None:
    logging.basicConfig(
        level=getattr(logging, level.upper()),
        format="%(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    # The libraries' own INFO lines (every connection, every HTTP request) drown the summary.
    for noisy in ("mail.log", "httpx", "httpcore"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, logging.getLogger().level))


def _load(args: argparse.Namespace) -> Settings | None:
    try:
        return load_settings(config_path(args.config))
    except ConfigError as exc:
        print(f"mailhook: config error: {exc}", file=sys.stderr)
        return None


def _serve(args: argparse.Namespace) -> int:
    settings = _load(args)
    if settings is None:
        return EXIT_CONFIG
    from mailhook.daemon import run

    return asyncio.run(run(settings))


def _check_config(args: argparse.Namespace) -> int:
    settings = _load(args)
    if settings is None:
        return EXIT_CONFIG
    print(f"# {config_path(args.config)}: OK")
    for section, values in masked(settings).items():
        print(f"\n[{section}]")
        for key, value in values.items():
            print(f"{key} = {json.dumps(value, ensure_ascii=False)}")
    return 0


def _explain(args: argparse.Namespace) -> int:
    settings = _load(args)
    if settings is None:
        return EXIT_CONFIG
    try:
        raw = Path(args.message).read_bytes()
    except OSError as exc:
        print(f"mailhook: cannot read {args.message}: {exc.strerror}", file=sys.stderr)
        return 1
    from mailhook.explain import explain

    stored = _read_stored(settings)
    for line in explain(raw, settings, args.sender, stored, datetime.now(timezone.utc)):
        print(line)
    return 0


def _read_stored(settings: Settings) -> dict[tuple[str, str], object]:
    """Stored events, read-only; an absent store is simply empty."""
    path = Path(settings.store.path)
    if not path.exists():
        return {}
    from mailhook.store.sqlite import event_from_row

    try:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        conn.row_factory = sqlite3.Row
        rows = conn.execute("select * from events").fetchall()
        conn.close()
    except sqlite3.Error:
        return {}
    events = [event_from_row(dict(row)) for row in rows]
    return {(event.organizer, event.uid): event for event in events}


def _standin(args: argparse.Namespace) -> int:
    from mailhook.testing.standin import main as standin_main

    return int(standin_main(args.args))


if __name__ == "__main__":
    raise SystemExit(main())
