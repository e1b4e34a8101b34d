"""The ``mailhook`` command: serve, check-config, check, explain, conferences, reschedule,
standin, version."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from mailhook import __version__, logfmt
from mailhook.config import ConfigError, Settings, config_path, load_settings, masked

if TYPE_CHECKING:
    from mailhook.core.model import StoredEvent

log = logging.getLogger("mailhook")

EXIT_CONFIG = 2
EXIT_FAILED = 1
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
    _setup_logging(args.log_level or "info")
    from mailhook.errors import StoreUnavailable

    try:
        return int(args.func(args))
    except StoreUnavailable as exc:
        # The store's own error line says what is wrong and how to recover; no traceback.
        _error(f"mailhook: the store is not usable: {exc}")
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
    serve.set_defaults(func=_serve)

    health = commands.add_parser(
        "check", help="check config, store, TrueConf credentials and the next hop; exit 1 on failure"
    )
    _config_option(health)
    health.set_defaults(func=_check)

    conferences = commands.add_parser("conferences",
                                      help="list, show, delete or reconcile stored conferences")
    actions = conferences.add_subparsers(dest="action", metavar="ACTION", required=True)
    listing = actions.add_parser("list", help="a table of stored events and their conferences")
    _config_option(listing)
    listing.add_argument("--all", action="store_true", help="include deleted conferences")
    listing.set_defaults(func=_conferences_list)
    for name, func, text in (
        ("show", _conferences_show, "everything stored about one event"),
        ("delete", _conferences_delete, "delete the conference on TrueConf and in the store"),
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
    reconcile.set_defaults(func=_conferences_reconcile)

    reschedule = commands.add_parser(
        "reschedule", help="move conferences of recurring events whose occurrence is over (one pass)"
    )
    _config_option(reschedule)
    reschedule.set_defaults(func=_reschedule)

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

    files = commands.add_parser(
        "install-files", help="put the config, the systemd unit and the docs in place")
    files.add_argument("--prefix", default="/",
                       help="a staging root to install under (default: /)")
    files.add_argument("--command", default="", dest="unit_command", metavar="PATH",
                       help="the mailhook command the unit runs (default: this one)")
    files.set_defaults(func=_install_files)

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
    "install-files": "Install the example config as /etc/mailhook/mailhook.toml (never over an "
                     "existing one; the try-out values commented out, so check-config names what "
                     "to set), the systemd unit as /etc/systemd/system/mailhook.service running "
                     "this mailhook, and the docs in /usr/share/doc/mailhook-trueconf. --prefix "
                     "installs under a staging root instead of /.",
}


def _describe_commands(parser: argparse.ArgumentParser, prefix: str = "") -> None:
    """Give every command's --help its description, and the sub-commands' too."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, command in action.choices.items():
                command.description = command.description or DESCRIPTIONS.get(prefix + name)
                _describe_commands(command, f"{prefix}{name} ")


def _config_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", "-c", default=None,
                        help="config file (default: $MAILHOOK_CONFIG or /etc/mailhook/mailhook.toml)")


def _setup_logging(level: str) -> None:
    logfmt.setup(level)


def _load(args: argparse.Namespace) -> Settings | None:
    try:
        return load_settings(config_path(args.config))
    except ConfigError as exc:
        print(f"mailhook: config error: {exc}", file=sys.stderr)
        return None


def _serve(args: argparse.Namespace) -> int:
    from mailhook import workers

    workers.hold_reloads()  # until the event loop takes SIGHUP over
    if args.listen_fds:
        return _serve_worker(args)
    settings = _load(args)
    if settings is None:
        return EXIT_CONFIG
    if args.log_level is None:
        logfmt.set_level(settings.log.level)
    path = config_path(args.config)
    fixed = args.log_level is not None
    if settings.smtp.workers == 1:
        from mailhook.daemon import run

        return asyncio.run(run(settings, config_file=path, log_level_fixed=fixed))
    supervisor = os.getpid()
    shared = workers.shared_metrics_dir()  # before anything imports prometheus-client
    try:
        return _serve_workers(settings, path, fixed, args.log_level)
    finally:
        if os.getpid() == supervisor:
            workers.remove_metrics_dir(shared)


def _serve_worker(args: argparse.Namespace) -> int:
    """A worker the supervisor started again after the first one exited: it runs on the
    supervisor's sockets and settings."""
    from mailhook import workers
    from mailhook.daemon import run_worker

    if not workers.die_with_parent(args.parent):
        return 0
    try:
        settings = workers.read_settings(args.settings_fd) if args.settings_fd >= 0 else None
    except (OSError, ValueError) as exc:
        print(f"mailhook: worker {args.worker}: cannot read the supervisor's settings: {exc}",
              file=sys.stderr)
        return EXIT_FAILED
    settings = settings or _load(args)
    if settings is None:
        return EXIT_CONFIG
    fixed = args.log_level is not None
    if not fixed:
        logfmt.set_level(settings.log.level)
    sockets = workers.inherited([int(fd) for fd in args.listen_fds.split(",")])
    return asyncio.run(run_worker(settings, config_path(args.config), sockets, fixed))


def _serve_workers(settings: Settings, path: Path, fixed: bool, level: str | None) -> int:
    """Bind, prepare the store, fork the workers, then run the supervisor."""
    from mailhook import workers
    from mailhook.daemon import run, run_worker
    from mailhook.store.sqlite import prepare

    smtp = settings.smtp
    try:
        sockets = workers.bind(smtp.listen_host, smtp.listen_port)
    except OSError as exc:
        log.error("cannot listen on %s:%s: %s", smtp.listen_host, smtp.listen_port,
                  exc.strerror or exc)
        return EXIT_FAILED
    problem = prepare(settings.store.path)  # schema migrations, before several processes open it
    if problem:
        log.error("cannot open the store: %s", problem)
        return EXIT_FAILED
    parent = os.getpid()

    def worker(number: int) -> int:
        if not workers.die_with_parent(parent):
            return 0
        return asyncio.run(run_worker(settings, path, sockets, fixed))

    pids = workers.fork_workers(smtp.workers, worker)
    return asyncio.run(run(settings, config_file=path, log_level_fixed=fixed, sockets=sockets,
                           worker_pids=tuple(pids), log_level=level))


def _check(args: argparse.Namespace) -> int:
    path = config_path(args.config)
    try:
        settings = load_settings(path)
    except ConfigError as exc:
        print(f"FAIL  config  {exc}")
        return EXIT_CONFIG
    from mailhook.admin import check

    return asyncio.run(check(settings, path, print))


def _conferences_list(args: argparse.Namespace) -> int:
    from mailhook.admin import list_conferences, stored_events

    settings = _load(args)
    if settings is None:
        return EXIT_CONFIG
    return list_conferences(stored_events(settings), args.all, print)


def _conferences_show(args: argparse.Namespace) -> int:
    from mailhook.admin import select, show_conference, stored_events

    settings = _load(args)
    if settings is None:
        return EXIT_CONFIG
    event = select(stored_events(settings), args.uid, args.organizer, _error)
    return EXIT_FAILED if event is None else show_conference(event, print)


def _conferences_delete(args: argparse.Namespace) -> int:
    from mailhook.admin import delete_conference, select, stored_events

    settings = _load(args)
    if settings is None:
        return EXIT_CONFIG
    event = select(stored_events(settings), args.uid, args.organizer, _error)
    if event is None or not (args.yes or _confirmed(event)):
        return EXIT_FAILED
    return asyncio.run(delete_conference(settings, event, print, _error))


def _confirmed(event: StoredEvent) -> bool:
    """Ask on the terminal before deleting a conference; without a terminal, refuse (a script
    says --yes)."""
    what = f"the conference {event.conference_id or '-'} of {event.uid} ({event.organizer})"
    if not sys.stdin.isatty():
        _error(f"mailhook: not deleting {what}: stdin is not a terminal to ask on; "
               "add --yes to delete without asking")
        return False
    print(f"Delete {what} on TrueConf Server for every participant? [y/N] ", end="",
          file=sys.stderr, flush=True)
    if sys.stdin.readline().strip().lower() in ("y", "yes"):
        return True
    _error("mailhook: nothing deleted")
    return False


def _conferences_reconcile(args: argparse.Namespace) -> int:
    from mailhook.reconcile import reconcile

    settings = _load(args)
    if settings is None:
        return EXIT_CONFIG
    return asyncio.run(reconcile(settings, args.fix, print, _error))


def _reschedule(args: argparse.Namespace) -> int:
    settings = _load(args)
    if settings is None:
        return EXIT_CONFIG
    try:
        from mailhook.reschedule import reschedule_once
    except ImportError:
        _error("mailhook: reschedule is not available in this version")
        return EXIT_FAILED
    from mailhook.errors import MailhookError

    try:
        moved = asyncio.run(reschedule_once(settings))
    except MailhookError as exc:
        _error(f"mailhook: reschedule failed: {exc}")
        return EXIT_FAILED
    print(f"moved {moved} conference(s) to their next occurrence")
    return 0


def _error(line: str) -> None:
    print(line, file=sys.stderr)


def _check_config(args: argparse.Namespace) -> int:
    settings = _load(args)
    if settings is None or _relay_loops(settings, config_path(args.config)):
        return EXIT_CONFIG
    print(f"# {config_path(args.config)}: OK")
    for section, values in masked(settings).items():
        print(f"\n[{section}]")
        for key, value in values.items():
            print(f"{key} = {json.dumps(value, ensure_ascii=False)}")
    return 0


def _relay_loops(settings: Settings, path: Path) -> bool:
    """Say so when relay is mailhook's own listener: every message would loop."""
    from mailhook.loop import relay_loop

    problem = relay_loop(settings)
    if problem:
        print(f"mailhook: config error: {path}: {problem}", file=sys.stderr)
    return bool(problem)


def _explain(args: argparse.Namespace) -> int:
    settings = _load(args)
    if settings is None:
        return EXIT_CONFIG
    try:
        raw = Path(args.message).read_bytes()
    except OSError as exc:
        print(f"mailhook: cannot read {args.message}: {exc.strerror}", file=sys.stderr)
        return 1
    from mailhook.explain import explain_with_store

    for line in asyncio.run(explain_with_store(raw, settings, args.sender)):
        print(line)
    return 0


def _install_files(args: argparse.Namespace) -> int:
    from mailhook.install import install_files, this_command

    try:
        return install_files(Path(args.prefix), args.unit_command or this_command(), print)
    except BrokenPipeError:
        raise
    except OSError as exc:
        _error(f"mailhook: cannot install the files: {exc}")
        return EXIT_FAILED


def _standin(args: argparse.Namespace) -> int:
    from mailhook.testing.standin import main as standin_main

    return int(standin_main(args.args, prog="mailhook standin"))


if __name__ == "__main__":
    raise SystemExit(main())
