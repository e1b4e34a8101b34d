"""What a release ships: the wheel's name, version and data, and `mailhook install-files`
putting the config, the unit and the docs where the unit expects them."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tomllib
import zipfile
from importlib.metadata import version
from pathlib import Path

from tests.support.process import ROOT, mailhook

PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
# What the wheel's mailhook/data/ holds, each a copy of the file of the same path at the top.
DATA = ["README.md", "CHANGELOG.md", "systemd/mailhook.service",
        *[str(p.relative_to(ROOT)) for p in sorted((ROOT / "config").iterdir()) if p.is_file()],
        *[str(p.relative_to(ROOT)) for p in sorted((ROOT / "docs").glob("*.md"))]]
REQUIRED = {  # what an installed config needs before it loads, as an admin would give it
    "MAILHOOK_TRUECONF__SERVER_URL": "https://video.example.com",
    "MAILHOOK_TRUECONF__CLIENT_ID": "mailhook",
    "MAILHOOK_POLICY__LOCAL_DOMAINS": "example.com",
}


def build_wheel(tmp_path: Path) -> Path:
    """Build the wheel from a copy of the source tree (the tree itself stays untouched)."""
    source = tmp_path / "source"
    for name in ("pyproject.toml", "setup.py", "MANIFEST.in", "README.md", "CHANGELOG.md"):
        shutil.copy(ROOT / name, source / name if source.exists() else _made(source) / name)
    for folder in ("mailhook", "config", "systemd", "docs"):
        shutil.copytree(ROOT / folder, source / folder,
                        ignore=shutil.ignore_patterns("__pycache__", "data"))
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps",
                    "--no-build-isolation", "--wheel-dir", str(tmp_path / "dist"), str(source)],
                   check=True, capture_output=True, timeout=300)
    [wheel] = (tmp_path / "dist").glob("*.whl")
    return wheel


def _made(folder: Path) -> Path:
    folder.mkdir(parents=True)
    return folder


def test_wheel_is_mailhook_trueconf_with_the_data_identical_to_the_sources(tmp_path):
    """The wheel is named mailhook-trueconf at the project's version, installs the `mailhook`
    command, and carries config, unit and docs as byte-identical copies."""
    wheel = build_wheel(tmp_path)
    assert wheel.name == f"mailhook_trueconf-{PYPROJECT['project']['version']}-py3-none-any.whl"
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        [metadata] = [n for n in names if n.endswith(".dist-info/METADATA")]
        [entry_points] = [n for n in names if n.endswith(".dist-info/entry_points.txt")]
        head = archive.read(metadata).decode()
        assert "\nName: mailhook-trueconf\n" in head
        assert f"\nVersion: {PYPROJECT['project']['version']}\n" in head
        assert "mailhook = mailhook.cli:main" in archive.read(entry_points).decode()
        for name in DATA:
            assert archive.read(f"mailhook/data/{name}") == (ROOT / name).read_bytes(), name


def test_version_is_the_installed_distributions():
    """`mailhook version`, `mailhook --version`, the distribution metadata and pyproject.toml
    agree."""
    expected = f"mailhook {PYPROJECT['project']['version']}\n"
    assert version("mailhook-trueconf") == PYPROJECT["project"]["version"]
    assert mailhook("version").stdout == mailhook("--version").stdout == expected


def install(prefix: Path, *options: str) -> str:
    """Run `mailhook install-files` under a staging root; its output."""
    result = mailhook("install-files", "--prefix", str(prefix), *options)
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_install_files_puts_config_unit_and_docs_where_the_unit_expects_them(tmp_path):
    """The unit runs the given command on /etc/mailhook/mailhook.toml, its Documentation= page
    is installed, and the docs are copies of the sources."""
    install(tmp_path, "--command", "/usr/bin/mailhook")
    unit = (tmp_path / "etc/systemd/system/mailhook.service").read_text()
    shipped = (ROOT / "systemd" / "mailhook.service").read_text()
    assert unit == shipped.replace("=/usr/local/bin/mailhook ", "=/usr/bin/mailhook ")
    assert re.search(r"^ExecStart=/usr/bin/mailhook serve --config /etc/mailhook/mailhook.toml$",
                     unit, re.MULTILINE)
    [page] = re.findall(r"^Documentation=file://(/\S+)$", unit, re.MULTILINE)
    assert (tmp_path / page.lstrip("/")).read_bytes() == (ROOT / "docs" / "systemd.md").read_bytes()
    docs = tmp_path / "usr/share/doc/mailhook-trueconf"
    for name in DATA:
        if name.startswith("docs/") or name in ("README.md", "CHANGELOG.md"):
            assert (docs / name).read_bytes() == (ROOT / name).read_bytes(), name
    example = docs / "examples" / "mailhook.toml"
    assert example.read_bytes() == (ROOT / "config" / "mailhook.toml").read_bytes()


def test_installed_config_names_what_to_set_until_it_is_set(tmp_path):
    """The installed config is the example with its try-out values (the stand-in, example.com)
    commented out: check-config names the first missing one, and passes once the admin's
    settings and the secret file are there."""
    install(tmp_path)
    config = tmp_path / "etc/mailhook/mailhook.toml"
    installed = config.read_text().splitlines()
    example = (ROOT / "config" / "mailhook.toml").read_text().splitlines()
    try_out = ("server_url", "client_id", "client_secret =", "local_domains")
    assert [line for line in installed if line.startswith(try_out)] == []
    assert [line for line in installed if line.strip() and not line.startswith("#")] == \
        [line for line in example if line.strip() and not line.startswith(("#", *try_out))]
    missing = mailhook("check-config", "--config", str(config))
    assert missing.returncode == 2
    assert "missing setting trueconf.server_url" in missing.stderr
    secret = tmp_path / "trueconf-secret"
    secret.write_text("from-the-credential\n")
    configured = mailhook("check-config", "--config", str(config),
                          env={**REQUIRED, "MAILHOOK_TRUECONF__CLIENT_SECRET_FILE": str(secret)})
    assert configured.returncode == 0, configured.stderr
    assert configured.stderr == ""  # no warning: no client_secret beside the secret file


def test_install_files_never_overwrites_a_config(tmp_path):
    """A second run keeps the admin's config and says so; the unit and docs are renewed."""
    install(tmp_path)
    config = tmp_path / "etc/mailhook/mailhook.toml"
    config.write_text("# the admin's own\n")
    output = install(tmp_path)
    assert config.read_text() == "# the admin's own\n"
    assert f"kept {config}" in output and "wrote" in output
