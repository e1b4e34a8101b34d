"""The ``mailhook`` command: serve, check-config, check, explain, conferences, reschedule,
store, standin, version."""

from __future__ import annotations

import argparse
import os
import sys

from mailhook import __version__, logfmt
from mailhook import commands as do
from mailhook.commands import EXIT_CONFIG, EXIT_FAILED

EXIT_BROKEN_PIPE = 128 + 13  # what a shell reports for a command ended by SIGPIPE


def main(argv: list[str] | None = None) -> int:
    """Entry point of the console script."""
    try:
        return _main(argv)
    except BrokenPipeError:
        # Output into a pipe whose reader has gone (`mailhook conferences list | head -1`):
        # stop quietly, as a command killed by SIGPIPE does, without a traceback.
        _silence_stdout()
        return EXIT_BROKEN_PIPE


def _silence_stdout() -> None:
    # Python flushes stdout once more at exit; point it at /dev/null so that flush is quiet.
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass
    finally:
        os.close(devnull)


def _main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args, extra = parser.parse_known_args(argv)
    if getattr(args, "command", None) == "standin":
        args.args = [*extra, *args.args]
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    if not getattr(args, "command", None):
        parser.print_help()
        return EXIT_CONFIG
    do.setup_logging(args.log_level or "info")
    from mailhook.errors import StoreUnavailable

    try:
        return int(args.func(args))
    except StoreUnavailable as exc:
        # The store's own error line says what is wrong and how to recover; no traceback.
        do.error(f"mailhook: the store is not usable: {exc}")
        return EXIT_FAILED


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mailhook",
        description="SMTP content filter that adds TrueConf video conferences to invitations.",
    )
    parser.add_argument("--log-level", default=None, choices=logfmt.LEVELS,
                        help="log verbosity (default: [log] level from the config, else info)")
    parser.add_argument("--version", action="version", version=f"mailhook {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    serve = commands.add_parser("serve", help="run the SMTP filter in the foreground")
    _config_option(serve)
    serve.add_argument("--log-level", default=argparse.SUPPRESS, choices=logfmt.LEVELS,
                       help="log verbosity (overrides [log] level, also across reloads)")
    # How the supervisor starts a worker again (smtp.workers > 1); not for people.
    serve.add_argument("--listen-fds", default="", help=argparse.SUPPRESS)
    serve.add_argument("--settings-fd", type=int, default=-1, help=argparse.SUPPRESS)
    serve.add_argument("--parent", type=int, default=0, help=argparse.SUPPRESS)
    serve.add_argument("--worker", type=int, default=0, help=argparse.SUPPRESS)
    serve.set_defaults(func=do.serve)

    health = commands.add_parser(
        "check", help="check config, store, TrueConf credentials and the next hop; exit 1 on failure"
    )
    _config_option(health)
    health.set_defaults(func=do.check)

    conferences = commands.add_parser("conferences",
                                      help="list, show, delete or reconcile stored conferences")
    actions = conferences.add_subparsers(dest="action", metavar="ACTION", required=True)
    listing = actions.add_parser("list", help="a table of stored events and their conferences")
    _config_option(listing)
    listing.add_argument("--all", action="store_true", help="include deleted conferences")
    listing.set_defaults(func=do.conferences_list)
    for name, func, text in (
        ("show", do.conferences_show, "everything stored about one event"),
        ("delete", do.conferences_delete, "delete the conference on TrueConf and in the store"),
    ):
        action = actions.add_parser(name, help=text)
        _config_option(action)
        action.add_argument("uid", metavar="UID", help="the event's iCalendar UID")
        action.add_argument("--organizer", default="",
                            help="the organizer, when several organizers use the same UID")
        action.set_defaults(func=func)
    actions.choices["delete"].add_argument(
        "--yes", "-y", action="store_true",
        help="delete without asking (needed when stdin is not a terminal)")
    reconcile = actions.add_parser(
        "reconcile", help="compare the store with TrueConf: leaked and gone conferences")
    _config_option(reconcile)
    reconcile.add_argument("--fix", action="store_true",
                           help="delete the leaked conferences and clear the gone ones")
    reconcile.set_defaults(func=do.conferences_reconcile)

    reschedule = commands.add_parser(
        "reschedule", help="move conferences of recurring events whose occurrence is over (one pass)"
    )
    _config_option(reschedule)
    reschedule.set_defaults(func=do.reschedule)

    _store_commands(commands)

    check = commands.add_parser("check-config", help="validate the config and print it, secrets masked")
    _config_option(check)
    check.set_defaults(func=do.check_config)

    explain = commands.add_parser(
        "explain", help="say what would happen to a message, without calling TrueConf or writing the store"
    )
    _config_option(explain)
    explain.add_argument("message", help="the message file (.eml)")
    explain.add_argument("--sender", default="",
                         help="envelope sender (default: the message's From address)")
    explain.set_defaults(func=do.explain)

    standin = commands.add_parser(
        "standin", help="run the bundled TrueConf API stand-in (for trying mailhook out)",
        add_help=False,
    )
    standin.add_argument("args", nargs=argparse.REMAINDER)
    standin.set_defaults(func=do.standin)

    files = commands.add_parser(
        "install-files", help="put the config, the systemd unit and the docs in place")
    files.add_argument("--prefix", default="/",
                       help="a staging root to install under (default: /)")
    files.add_argument("--command", default="", dest="unit_command", metavar="PATH",
                       help="the mailhook command the unit runs (default: this one)")
    files.set_defaults(func=do.install_files)

    version = commands.add_parser("version", help="print the version")
    version.set_defaults(func=lambda args: print(f"mailhook {__version__}") or 0)
    _describe_commands(parser)
    return parser


# What each command's --help says about it (the one-line help is its entry in the list).
DESCRIPTIONS = {
    "serve": "Run the SMTP content filter in the foreground: under systemd a Type=notify service "
             "with watchdog pings; SIGHUP re-reads the config, SIGTERM lets messages in flight "
             "finish.",
    "check": "Check the config, the store, TrueConf Server (a token for the credentials, the "
             "conferences API, the users API) and the next hop: one ok/FAIL line each. Exit 0 "
             "when all passed, 1 when one failed, 2 for a config error.",
    "conferences": "The events mailhook stored and their TrueConf conferences.",
    "conferences list": "A table of stored events and their conferences (read-only).",
    "conferences show": "Everything stored about one event (read-only).",
    "conferences reconcile": "Compare the store with TrueConf Server: conferences tagged by "
                             "mailhook that no stored event uses (leaked), and stored events "
                             "whose conference is gone. Exit 0 when they agree, 1 otherwise; "
                             "--fix deletes the leaked on TrueConf and marks the gone events "
                             "deleted.",
    "conferences delete": "Delete the event's conference on TrueConf Server and mark the event "
                          "deleted. Asks first on a terminal; --yes deletes without asking, and "
                          "is needed when stdin is not a terminal.",
    "reschedule": "One pass moving conferences of recurring events whose occurrence is over to "
                  "their next occurrence (the daemon does this periodically by itself).",
    "check-config": "Validate the config and print the effective settings, secrets masked. "
                    "Exit 2 with one line naming the key when a setting is wrong.",
    "explain": "Say what mailhook would do with a message (method, UID, organizer, decision "
               "and why) without calling TrueConf or writing the store.",
    "standin": "Run the bundled TrueConf API stand-in, to try mailhook or rehearse mail routing "
               "before connecting a real TrueConf Server.",
    "version": "Print mailhook's version (the installed package's).",
    "store": "Look after the store: copy it to another backend, back it up, prune old events.",
    "store copy": "Copy every event, pending deletion and the TrueConf user list from the store "
                  "one config names to the store another names (SQLite to PostgreSQL and "
                  "back); running it again changes nothing.",
    "store backup": "Write a consistent copy of the SQLite store to FILE while mailhook runs.",
    "store prune": "Forget events whose conference was deleted more than "
                   "store.keep_deleted_days days ago (the daemon does this periodically).",
    "install-files": "Install the example config as /etc/mailhook/mailhook.toml (never over an "
                     "existing one; the try-out values commented out, so check-config names what "
                     "to set), the systemd unit as /etc/systemd/system/mailhook.service running "
                     "this mailhook, and the docs in /usr/share/doc/mailhook-trueconf. --prefix "
                     "installs under a staging root instead of /.",
}


def _describe_commands(parser: argparse.ArgumentParser, prefix: str = "") -> None:
    """Give every command's --help its description, and the sub-commands' too."""
    # argparse offers no public way to reach the sub-parsers once they are added.
    for action in parser._actions:  # noqa: SLF001
        if isinstance(action, argparse._SubParsersAction):  # noqa: SLF001
            for name, command in action.choices.items():
                command.description = command.description or DESCRIPTIONS.get(prefix + name)
                _describe_commands(command, f"{prefix}{name} ")


def _store_commands(commands: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    store = commands.add_parser("store", help="copy, back up or prune the store")
    actions = store.add_subparsers(dest="action", metavar="ACTION", required=True)
    copy = actions.add_parser("copy", help="copy every event, pending deletion and the user "
                                           "list from one store to another (e.g. SQLite to "
                                           "PostgreSQL)")
    copy.add_argument("--from", dest="source", required=True, metavar="CONFIG",
                      help="config file naming the store to copy from")
    copy.add_argument("--to", dest="target", required=True, metavar="CONFIG",
                      help="config file naming the store to copy to")
    copy.set_defaults(func=do.store_copy)
    backup = actions.add_parser("backup", help="write a consistent copy of the SQLite store "
                                               "while mailhook runs")
    _config_option(backup)
    backup.add_argument("file", metavar="FILE", help="the new file to write")
    backup.set_defaults(func=do.store_backup)
    prune = actions.add_parser("prune", help="forget events deleted over "
                                             "store.keep_deleted_days days ago (the daemon "
                                             "does this periodically)")
    _config_option(prune)
    prune.set_defaults(func=do.store_prune)


def _config_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", "-c", default=None,
                        help="config file (default: $MAILHOOK_CONFIG or /etc/mailhook/mailhook.toml)")


if __name__ == "__main__":
    raise SystemExit(main())
