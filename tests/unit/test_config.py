"""Settings: the TOML file, environment overrides, clear errors and the example file."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest

from mailhook.config import ConfigError, Settings, load_settings, masked

ROOT = Path(__file__).resolve().parents[2]
MINIMAL = """
[trueconf]
server_url = "https://video.example.com/"
client_id = "mailhook"
client_secret = "hunter2-secret"
[policy]
local_domains = ["Example.COM"]
"""


def write(tmp_path: Path, text: str) -> Path:
    """Write a config file and return its path."""
    path = tmp_path / "mailhook.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_minimal_file_gets_defaults(tmp_path):
    """Only the required keys are needed; everything else has its documented default."""
    settings = load_settings(write(tmp_path, MINIMAL))
    assert settings.smtp.listen_port == 10025 and settings.relay.port == 10026
    assert settings.trueconf.api_version == "v3.11"
    assert settings.trueconf.server_url == "https://video.example.com"
    assert settings.policy.local_domains == ("example.com",)
    assert settings.policy.trigger == "keyword" and settings.policy.keywords == ("TrueConf",)


def test_environment_overrides_file(tmp_path, monkeypatch):
    """MAILHOOK_<SECTION>__<KEY> overrides the file, key by key."""
    monkeypatch.setenv("MAILHOOK_SMTP__LISTEN_PORT", "2525")
    monkeypatch.setenv("MAILHOOK_TRUECONF__API_VERSION", "v4")
    monkeypatch.setenv("MAILHOOK_POLICY__LOCAL_DOMAINS", '["a.example", "b.example"]')
    settings = load_settings(write(tmp_path, MINIMAL))
    assert settings.smtp.listen_port == 2525
    assert settings.smtp.listen_host == "127.0.0.1"
    assert settings.trueconf.api_version == "v4"
    assert settings.trueconf.client_id == "mailhook"
    assert settings.policy.local_domains == ("a.example", "b.example")


@pytest.mark.parametrize(
    ("text", "key"),
    [
        (MINIMAL.replace('server_url = "https://video.example.com/"', ""), "trueconf.server_url"),
        (MINIMAL.replace('local_domains = ["Example.COM"]', ""), "policy.local_domains"),
        (MINIMAL + '[smtp]\nlisten_port = "many"\n', "smtp.listen_port"),
        (MINIMAL + "[smtp]\nlisten_prot = 1\n", "smtp.listen_prot"),
        (MINIMAL.replace('"https://video.example.com/"', '"video.example.com"'), "trueconf.server_url"),
        (MINIMAL + '\n[store]\npath = "x"\n[policy2]\n', "policy2"),
        (MINIMAL.replace('client_secret = "hunter2-secret"', ""), "trueconf.client_secret"),
    ],
)
def test_bad_setting_names_the_key(tmp_path, text, key):
    """A missing, unknown or bad setting gives one line naming the key, without the secret."""
    with pytest.raises(ConfigError) as caught:
        load_settings(write(tmp_path, text))
    message = str(caught.value)
    assert key in message and "\n" not in message
    assert "hunter2" not in message


def test_bad_toml_and_missing_file(tmp_path):
    """Unreadable files are reported, not raised as tracebacks."""
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_settings(write(tmp_path, "[trueconf\n"))
    with pytest.raises(ConfigError, match="not found"):
        load_settings(tmp_path / "absent.toml")


def test_secret_from_file(tmp_path):
    """client_secret_file supplies the secret (e.g. a systemd credential)."""
    secret = tmp_path / "secret"
    secret.write_text("from-file-secret\n")
    text = MINIMAL.replace('client_secret = "hunter2-secret"', f'client_secret_file = "{secret}"')
    assert load_settings(write(tmp_path, text)).trueconf.secret() == "from-file-secret"
    missing = MINIMAL.replace('client_secret = "hunter2-secret"', 'client_secret_file = "/nonexistent"')
    with pytest.raises(ConfigError, match="client_secret_file"):
        load_settings(write(tmp_path, missing))


def test_masked_hides_secret(tmp_path):
    """The printable settings never contain the secret."""
    data = masked(load_settings(write(tmp_path, MINIMAL)))
    assert data["trueconf"]["client_secret"] == "********"
    assert "hunter2" not in repr(data)


def test_example_config_documents_every_setting():
    """config/mailhook.toml names every setting, each under a comment, and loads as is."""
    example = ROOT / "config" / "mailhook.toml"
    data = tomllib.loads(example.read_text())
    sections = dict(re.findall(r"^\[(\w+)\]\n(.*?)(?=^\[|\Z)", example.read_text(), re.MULTILINE | re.DOTALL))
    for section, model in Settings.model_fields.items():
        fields = model.annotation.model_fields  # type: ignore[union-attr]
        assert set(data[section]) == set(fields), section
        for key in fields:
            [paragraph] = [p for p in sections[section].split("\n\n") if re.search(rf"^{key} = ", p, re.MULTILINE)]
            assert paragraph.lstrip().startswith("#"), f"{section}.{key} has no comment"
    load_settings(example)


def test_example_defaults_match_code():
    """Where the example states a value, it is the code's default, except the noted ones."""
    data = tomllib.loads((ROOT / "config" / "mailhook.toml").read_text())
    required_or_example = {("trueconf", "server_url"), ("trueconf", "client_id"),
                           ("trueconf", "client_secret"), ("policy", "local_domains")}
    for section, model in Settings.model_fields.items():
        for key, field in model.annotation.model_fields.items():  # type: ignore[union-attr]
            if (section, key) in required_or_example:
                continue
            default = field.get_default(call_default_factory=True)
            default = getattr(default, "get_secret_value", lambda: default)()
            value = data[section][key]
            assert (list(default) if isinstance(default, tuple) else default) == value, f"{section}.{key}"


def test_delegates_are_read_lower_case(tmp_path):
    """policy.delegates maps organizers to delegates, lower-cased, "*@domain" on both sides."""
    text = MINIMAL + ('delegates = { "Alice@Example.com" = ["Assistant@Example.com"], '
                      '"*@example.com" = ["*@Example.com"] }\n')
    settings = load_settings(write(tmp_path, text))
    assert settings.policy.delegates == {"alice@example.com": ("assistant@example.com",),
                                         "*@example.com": ("*@example.com",)}
    assert load_settings(write(tmp_path, MINIMAL)).policy.delegates == {}


def test_delegates_from_the_environment(tmp_path, monkeypatch):
    """MAILHOOK_POLICY__DELEGATES takes the table as JSON."""
    monkeypatch.setenv("MAILHOOK_POLICY__DELEGATES", '{"alice@example.com": ["bob@example.com"]}')
    settings = load_settings(write(tmp_path, MINIMAL))
    assert settings.policy.delegates == {"alice@example.com": ("bob@example.com",)}


@pytest.mark.parametrize(
    ("entry", "named"),
    [
        ('"alice" = ["bob@example.com"]', "'alice'"),
        ('"alice@example.com" = ["bob"]', "'bob'"),
        ('"alice@example.com" = ["b*b@example.com"]', "'b*b@example.com'"),
        ('"alice@example.com" = ["*@*.example.com"]', "'*@*.example.com'"),
        ('"alice@example.com" = ["*"]', "'*'"),
        ('"alice@example.com" = ["Bob <bob@example.com>"]', "'Bob <bob@example.com>'"),
        ('"alice@elsewhere.example" = ["bob@example.com"]', "local_domains"),
        ('"alice@example.com" = "bob@example.com"', "policy.delegates"),
    ],
)
def test_bad_delegate_entry_names_it(tmp_path, entry, named):
    """A malformed delegates entry stops the load with one line naming the key and the entry."""
    with pytest.raises(ConfigError) as caught:
        load_settings(write(tmp_path, MINIMAL + f"delegates = {{ {entry} }}\n"))
    message = str(caught.value)
    assert "policy.delegates" in message and named in message and "\n" not in message


@pytest.mark.parametrize(
    ("variable", "value", "key", "expected"),
    [
        ("MAILHOOK_POLICY__LOCAL_DOMAINS", "a.example, b.example", "local_domains",
         ("a.example", "b.example")),
        ("MAILHOOK_POLICY__LOCAL_DOMAINS", "example.com", "local_domains", ("example.com",)),
        ("MAILHOOK_POLICY__KEYWORDS", "TrueConf,@video", "keywords", ("TrueConf", "@video")),
        ("MAILHOOK_POLICY__CALENDAR_SENDERS", '["cal@example.com"]', "calendar_senders",
         ("cal@example.com",)),
    ],
)
def test_environment_takes_lists_comma_separated_or_as_json(tmp_path, monkeypatch, variable, value,
                                                            key, expected):
    """A list setting from the environment may be comma-separated as well as JSON."""
    monkeypatch.setenv(variable, value)
    assert getattr(load_settings(write(tmp_path, MINIMAL)).policy, key) == expected


@pytest.mark.parametrize(
    ("variable", "value", "named", "expected"),
    [
        ("MAILHOOK_POLICY__LOCAL_DOMAINS", '["example.com"', "policy.local_domains",
         "a list of domains"),
        ("MAILHOOK_POLICY__DELEGATES", "boss@example.com", "policy.delegates",
         "a table of organizer"),
        ("MAILHOOK_POLICY", "example.com", "policy", "MAILHOOK_POLICY__KEY"),
        ("MAILHOOK_SMTP__LISTEN_PORT", "many", "smtp.listen_port", "a whole number"),
        ("MAILHOOK_SMTP__TRUSTED_NETWORKS", "10.0.0.0/8,nowhere", "smtp.trusted_networks",
         "'nowhere' is not an IP network"),
        ("MAILHOOK_SMTP__LISTEN_PROT", "1", "smtp.listen_prot", "did you mean listen_port"),
    ],
)
def test_environment_errors_are_one_line_naming_variable_key_and_expectation(
    tmp_path, monkeypatch, variable, value, named, expected
):
    """A bad value from the environment is a ConfigError naming the variable, the key and what
    is expected, like a bad value in the file."""
    monkeypatch.setenv(variable, value)
    with pytest.raises(ConfigError) as caught:
        load_settings(write(tmp_path, MINIMAL))
    message = str(caught.value)
    assert message.startswith(f"{variable}: "), message
    assert named in message and expected in message and "\n" not in message


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (MINIMAL.replace('["Example.COM"]', '"example.com"'),
         'bad value for policy.local_domains: expected a list of domains, e.g. ["example.com"], '
         'got "example.com"'),
        (MINIMAL + '[smtp]\nlisten_port = "many"\n',
         'bad value for smtp.listen_port: expected a whole number, got "many"'),
        (MINIMAL + 'trigger = "sometimes"\n',
         'bad value for policy.trigger: expected one of "keyword" or "always", got "sometimes"'),
        (MINIMAL.replace("[trueconf]", "[trueconf]\nverify_tls = 3"),
         "bad value for trueconf.verify_tls: expected true or false, got 3"),
        (MINIMAL.replace("[trueconf]", "[trueconf]\ntimeout = 0"),
         "bad value for trueconf.timeout: expected a number more than 0.0, got 0"),
        (MINIMAL.replace('["Example.COM"]', "[]"), "expected a list of domains"),
        (MINIMAL + "delegates = 3\n", "expected a table of organizer = [delegates]"),
        (MINIMAL + "[smtp]\nlisten_host = 1\n", "expected text, got 1"),
    ],
)
def test_errors_say_what_the_setting_expects(tmp_path, text, expected):
    """Errors name what the setting holds in an admin's words, not pydantic's types."""
    with pytest.raises(ConfigError) as caught:
        load_settings(write(tmp_path, text))
    message = str(caught.value)
    assert expected in message
    assert "tuple" not in message and "Input should" not in message and "\n" not in message


@pytest.mark.parametrize(("misspelt", "meant"), [("polcy", "policy"), ("truconf", "trueconf")])
def test_misspelt_section_is_reported_as_unknown(tmp_path, misspelt, meant):
    """A misspelt section is named as unknown, with the likely meant one, not as a missing one."""
    with pytest.raises(ConfigError) as caught:
        load_settings(write(tmp_path, MINIMAL.replace(f"[{meant}]", f"[{misspelt}]")))
    message = str(caught.value)
    assert f"unknown section [{misspelt}] (did you mean [{meant}]?)" in message
    assert "missing" not in message


def test_missing_section_names_what_it_needs(tmp_path):
    """A required section left out is named with the settings it needs."""
    text = MINIMAL.replace('[policy]\nlocal_domains = ["Example.COM"]\n', "")
    with pytest.raises(ConfigError, match=r"missing section \[policy\] \(it needs local_domains\)"):
        load_settings(write(tmp_path, text))


def test_secret_overridden_by_secret_file_is_warned(tmp_path, caplog):
    """client_secret next to client_secret_file is ignored, and a warning says so (without
    the secret)."""
    secret = tmp_path / "secret"
    secret.write_text("from-file-secret\n")
    text = MINIMAL.replace("[trueconf]", f'[trueconf]\nclient_secret_file = "{secret}"')
    settings = load_settings(write(tmp_path, text))
    assert settings.trueconf.secret() == "from-file-secret"
    [warning] = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert "trueconf.client_secret is ignored" in warning and str(secret) in warning
    assert "hunter2" not in caplog.text and "from-file-secret" not in caplog.text
    caplog.clear()
    load_settings(write(tmp_path, MINIMAL))
    assert not caplog.records


@pytest.mark.parametrize("address", ["Mailhook <noreply@example.com>", "noreply", "a b@example.com",
                                     "*@example.com", "noreply@"])
def test_notice_from_address_must_be_an_address(tmp_path, address):
    """notice.from_address is refused unless it is a plain e-mail address."""
    text = MINIMAL + f'[notice]\nfrom_address = "{address}"\n'
    with pytest.raises(ConfigError, match="bad value for notice.from_address: .* is not an e-mail"):
        load_settings(write(tmp_path, text))
    good = load_settings(write(tmp_path,
                               MINIMAL + '[notice]\nfrom_address = "noreply@example.com"\n'))
    assert good.notice_sender() == "noreply@example.com"
