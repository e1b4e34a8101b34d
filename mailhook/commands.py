"""What each ``mailhook`` command does, once ``mailhook.cli`` has read its arguments."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from mailhook import logfmt
from mailhook.config import ConfigError, Settings, config_path, load_settings, masked

if TYPE_CHECKING:
    from mailhook.core.model import StoredEvent

log = logging.getLogger("mailhook")

EXIT_CONFIG = 2
EXIT_FAILED = 1


def setup_logging(level: str) -> None:
    logfmt.setup(level)


def load(args: argparse.Namespace) -> Settings | None:
    try:
        return load_settings(config_path(args.config))
    except ConfigError as exc:
        print(f"mailhook: config error: {exc}", file=sys.stderr)
        return None


def serve(args: argparse.Namespace) -> int:
    from mailhook import workers

    workers.hold_reloads()  # until the event loop takes SIGHUP over
    if args.listen_fds:
        return serve_worker(args)
    settings = load(args)
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
        return serve_workers(settings, path, fixed, args.log_level)
    finally:
        if os.getpid() == supervisor:
            workers.remove_metrics_dir(shared)


def serve_worker(args: argparse.Namespace) -> int:
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
    settings = settings or load(args)
    if settings is None:
        return EXIT_CONFIG
    fixed = args.log_level is not None
    if not fixed:
        logfmt.set_level(settings.log.level)
    sockets = workers.inherited([int(fd) for fd in args.listen_fds.split(",")])
    return asyncio.run(run_worker(settings, config_path(args.config), sockets, fixed))


def serve_workers(settings: Settings, path: Path, fixed: bool, level: str | None) -> int:
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
    # Schema migrations, before several processes open the file (a database: under its lock).
    problem = "" if settings.store.url else prepare(settings.store.path)
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


def check(args: argparse.Namespace) -> int:
    path = config_path(args.config)
    try:
        settings = load_settings(path)
    except ConfigError as exc:
        print(f"FAIL  config  {exc}")
        return EXIT_CONFIG
    from mailhook.admin import check

    return asyncio.run(check(settings, path, print))


def conferences_list(args: argparse.Namespace) -> int:
    from mailhook.admin import list_conferences, stored_events

    settings = load(args)
    if settings is None:
        return EXIT_CONFIG
    return list_conferences(stored_events(settings), args.all, print)


def conferences_show(args: argparse.Namespace) -> int:
    from mailhook.admin import select, show_conference, stored_events

    settings = load(args)
    if settings is None:
        return EXIT_CONFIG
    event = select(stored_events(settings), args.uid, args.organizer, error)
    return EXIT_FAILED if event is None else show_conference(event, print)


def conferences_delete(args: argparse.Namespace) -> int:
    from mailhook.admin import delete_conference, select, stored_events

    settings = load(args)
    if settings is None:
        return EXIT_CONFIG
    event = select(stored_events(settings), args.uid, args.organizer, error)
    if event is None or not (args.yes or confirmed(event)):
        return EXIT_FAILED
    return asyncio.run(delete_conference(settings, event, print, error))


def confirmed(event: StoredEvent) -> bool:
    """Ask on the terminal before deleting a conference; without a terminal, refuse (a script
    says --yes)."""
    what = f"the conference {event.conference_id or '-'} of {event.uid} ({event.organizer})"
    if not sys.stdin.isatty():
        error(f"mailhook: not deleting {what}: stdin is not a terminal to ask on; "
               "add --yes to delete without asking")
        return False
    print(f"Delete {what} on TrueConf Server for every participant? [y/N] ", end="",
          file=sys.stderr, flush=True)
    if sys.stdin.readline().strip().lower() in ("y", "yes"):
        return True
    error("mailhook: nothing deleted")
    return False


def conferences_reconcile(args: argparse.Namespace) -> int:
    from mailhook.reconcile import reconcile

    settings = load(args)
    if settings is None:
        return EXIT_CONFIG
    return asyncio.run(reconcile(settings, args.fix, print, error))


def reschedule(args: argparse.Namespace) -> int:
    settings = load(args)
    if settings is None:
        return EXIT_CONFIG
    try:
        from mailhook.reschedule import reschedule_once
    except ImportError:
        error("mailhook: reschedule is not available in this version")
        return EXIT_FAILED
    from mailhook.errors import MailhookError

    try:
        moved = asyncio.run(reschedule_once(settings))
    except MailhookError as exc:
        error(f"mailhook: reschedule failed: {exc}")
        return EXIT_FAILED
    print(f"moved {moved} conference(s) to their next occurrence")
    return 0


def store_copy(args: argparse.Namespace) -> int:
    from mailhook.storetools import copy_store

    configs = []
    for path in (args.source, args.target):
        try:
            configs.append(load_settings(Path(path)))
        except ConfigError as exc:
            print(f"mailhook: config error: {exc}", file=sys.stderr)
            return EXIT_CONFIG
    for settings in configs:
        logfmt.redact(settings.store.password())
    return asyncio.run(copy_store(configs[0], configs[1], print, error))


def store_backup(args: argparse.Namespace) -> int:
    from mailhook.storetools import backup

    settings = load(args)
    if settings is None:
        return EXIT_CONFIG
    return asyncio.run(backup(settings, args.file, print, error))


def store_prune(args: argparse.Namespace) -> int:
    from mailhook.storetools import prune_command

    settings = load(args)
    if settings is None:
        return EXIT_CONFIG
    logfmt.redact(settings.store.password())
    return asyncio.run(prune_command(settings, print))


def error(line: str) -> None:
    print(line, file=sys.stderr)


def check_config(args: argparse.Namespace) -> int:
    settings = load(args)
    if settings is None or relay_loops(settings, config_path(args.config)):
        return EXIT_CONFIG
    print(f"# {config_path(args.config)}: OK")
    for section, values in masked(settings).items():
        print(f"\n[{section}]")
        for key, value in values.items():
            print(f"{key} = {json.dumps(value, ensure_ascii=False)}")
    return 0


def relay_loops(settings: Settings, path: Path) -> bool:
    """Say so when relay is mailhook's own listener: every message would loop."""
    from mailhook.loop import relay_loop

    problem = relay_loop(settings)
    if problem:
        print(f"mailhook: config error: {path}: {problem}", file=sys.stderr)
    return bool(problem)


def explain(args: argparse.Namespace) -> int:
    settings = load(args)
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


def install_files(args: argparse.Namespace) -> int:
    from mailhook.install import install_files, this_command

    try:
        return install_files(Path(args.prefix), args.unit_command or this_command(), print)
    except BrokenPipeError:
        raise
    except OSError as exc:
        error(f"mailhook: cannot install the files: {exc}")
        return EXIT_FAILED


def standin(args: argparse.Namespace) -> int:
    from mailhook.testing.standin import main as standin_main

    return int(standin_main(args.args, prog="mailhook standin"))

