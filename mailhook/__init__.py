"""mailhook: an SMTP content filter that gives calendar invitations a TrueConf conference."""

from __future__ import annotations

DISTRIBUTION = "mailhook-trueconf"  # the package's name on the index; the import is mailhook


def _version() -> str:
    """The installed distribution's version; in a source tree that was never installed, the
    one pyproject.toml gives."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(DISTRIBUTION)
    except PackageNotFoundError:
        import tomllib
        from pathlib import Path

        try:
            with (Path(__file__).resolve().parents[1] / "pyproject.toml").open("rb") as handle:
                return str(tomllib.load(handle)["project"]["version"])
        except (OSError, KeyError, tomllib.TOMLDecodeError):
            return "0+unknown"


__version__ = _version()
