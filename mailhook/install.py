"""``mailhook install-files``: the config, the systemd unit and the docs, put where the unit
expects them, from the copies the package carries (``mailhook/data/``, made when the wheel is
built) or, in a source tree, from the repository's own config/, systemd/ and docs/.

``--prefix`` is a staging root (like DESTDIR): files go under it, while what they name (the
config path, the command in the unit, the docs) stays the final one. The Debian package is
built that way (packaging/build.sh).
"""

from __future__ import annotations

import re
import sys
from collections.abc import Callable
from pathlib import Path

Print = Callable[[str], None]

CONFIG = Path("etc/mailhook/mailhook.toml")
UNIT = Path("etc/systemd/system/mailhook.service")
DOCS = Path("usr/share/doc/mailhook-trueconf")  # the unit's Documentation= points in here
SHIPPED_COMMAND = "/usr/local/bin/mailhook"  # what the unit in systemd/ runs
# The example config's values for trying mailhook out (the bundled stand-in's address and
# credentials, example.com). An installed config must not run on them: they are commented out,
# and check-config names each as missing until the admin sets it.
TRY_OUT = {"trueconf": ("server_url", "client_id", "client_secret"), "policy": ("local_domains",)}
HEADER = """\
# Installed by `mailhook install-files` from the example config. Set what it marks as
# "Required" (trueconf.server_url, trueconf.client_id, policy.local_domains; the secret goes in
# /etc/mailhook/trueconf-secret), then run `mailhook check`. The example with its try-out
# values is in /usr/share/doc/mailhook-trueconf/examples/mailhook.toml.

"""


def data_root() -> Path:
    """Where the config/, systemd/ and docs/ to install are."""
    here = Path(__file__).resolve().parent
    for root in (here / "data", here.parent):
        if (root / "config" / "mailhook.toml").is_file() and (root / "systemd").is_dir():
            return root
    raise FileNotFoundError(f"no config/ and systemd/ in {here / 'data'} or {here.parent}")


def system_config(example: str) -> str:
    """The example config as an installed one: the try-out values commented out."""
    section, lines = "", []
    for line in example.splitlines(keepends=True):
        if heading := re.match(r"\[(\w+)\]", line):
            section = heading.group(1)
        key = line.partition("=")[0].strip()
        if "=" in line and key in TRY_OUT.get(section, ()) and not line.startswith("#"):
            line = "# " + line
        lines.append(line)
    return HEADER + "".join(lines)


def unit_running(unit: str, command: str) -> str:
    """The unit with ExecStartPre and ExecStart running this mailhook command."""
    return re.sub(rf"^(Exec\w*=){re.escape(SHIPPED_COMMAND)}\b", lambda m: m.group(1) + command,
                  unit, flags=re.MULTILINE)


def this_command() -> str:
    """The mailhook command that is running, as installed (a symlink to it is kept as such)."""
    started = Path(sys.argv[0])
    if started.name == "mailhook" and started.is_file():
        return str(started.absolute())
    beside = Path(sys.executable).with_name("mailhook")
    return str(beside) if beside.is_file() else SHIPPED_COMMAND


def install_files(prefix: Path, command: str, out: Print) -> int:
    """Write the config (never over an existing one), the unit and the docs under ``prefix``."""
    source = data_root()
    _install_config(source, prefix, out)
    unit = prefix / UNIT
    _write(unit, unit_running((source / "systemd" / "mailhook.service").read_text(), command))
    out(f"wrote {unit} (ExecStart: {command} serve)")
    out(f"wrote {_install_docs(source, prefix / DOCS)} file(s) under {prefix / DOCS}")
    out("next: put the TrueConf client secret in /etc/mailhook/trueconf-secret (mode 0600), "
        "edit /etc/mailhook/mailhook.toml, `systemctl daemon-reload`, `mailhook check`, then "
        "`systemctl enable --now mailhook` (see docs/systemd.md)")
    return 0


def _install_config(source: Path, prefix: Path, out: Print) -> None:
    target = prefix / CONFIG
    target.parent.mkdir(parents=True, exist_ok=True, mode=0o755)
    text = system_config((source / "config" / "mailhook.toml").read_text(encoding="utf-8"))
    try:
        with target.open("x", encoding="utf-8") as handle:  # "x": never over the admin's
            handle.write(text)
    except FileExistsError:
        out(f"kept {target} (it exists; the shipped example is in {prefix / DOCS / 'examples'})")
        return
    target.chmod(0o644)
    out(f"wrote {target} (set the settings it marks as required)")


def _install_docs(source: Path, target: Path) -> int:
    files = [(source / name, target / name) for name in ("README.md", "CHANGELOG.md")]
    pages = sorted((source / "docs").glob("*.md"))
    files += [(page, target / "docs" / page.name) for page in pages]
    files += [(example, target / "examples" / example.name)
              for example in sorted((source / "config").iterdir()) if example.is_file()]
    for origin, destination in files:
        if origin.is_file():
            _write(destination, origin.read_bytes())
    return sum(1 for origin, _ in files if origin.is_file())


def _write(path: Path, content: str | bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o755)
    if isinstance(content, str):
        content = content.encode("utf-8")
    path.write_bytes(content)
    path.chmod(0o644)
