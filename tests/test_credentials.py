"""Credentials promises: every file format, the source precedence, errors that never leak a key.

The fake keys below are distinctive so that a leak into any message is unmistakable.
No test reads the real ~/.huaweicloud: HOME points at a temporary folder.
"""

from __future__ import annotations

import csv
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import pytest  # noqa: E402
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

import maas_rest_usage_stats as m  # noqa: E402

AK = "AKUNITTESTLEAK0001"
SK = "SKunitTestLeak-secret-0001"
TOKEN = "TOKENunitTestLeak-0001+/x"
PROJECT = "0123456789abcdef0123456789abcdef"
AK2, SK2 = "AKUNITTESTLEAK0002", "SKunitTestLeak-secret-0002"
AK3, SK3 = "AKUNITTESTLEAK0003", "SKunitTestLeak-secret-0003"
SECRETS = (AK, SK, TOKEN, AK2, SK2, AK3, SK3)
BOM = b"\xef\xbb\xbf"
POSIX = pytest.mark.skipif(os.name != "posix", reason="file modes are POSIX only")


@pytest.fixture(autouse=True)
def isolated_home(tmp_path, monkeypatch):
    """The real ~/.huaweicloud/credentials must never be read."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("USERPROFILE", str(home))
    for name in ("HW_ACCESS_KEY", "HW_SECRET_KEY", "HW_SECURITY_TOKEN", "HUAWEICLOUD_SDK_AK",
                 "HUAWEICLOUD_SDK_SK", "HUAWEICLOUD_SDK_SECURITY_TOKEN", "HUAWEICLOUD_SDK_CREDENTIALS_FILE"):
        monkeypatch.delenv(name, raising=False)
    return home


def write(folder: Path, name: str, data: bytes | str, mode: int = 0o600) -> str:
    path = folder / name
    path.write_bytes(data.encode("utf-8") if isinstance(data, str) else data)
    os.chmod(path, mode)
    return str(path)


def assert_no_secret(exc: BaseException) -> None:
    texts = [str(exc), repr(exc), getattr(exc, "hint", None) or ""]
    for secret in SECRETS:
        for text in texts:
            assert secret not in text, f"secret leaked into the error: {text!r}"


# ----------------------------------------------------------------------------------------------
# Formats: each with LF, CRLF, a BOM, comments and blank lines
# ----------------------------------------------------------------------------------------------

# name -> (lines, expected token, expected project id)
FORMATS = {
    "two_lines": ([AK, SK], None, None),
    "three_lines": ([AK, SK, TOKEN], TOKEN, None),
    "one_line_ak_sk": ([f"{AK},{SK}"], None, None),
    "one_line_ak_sk_token": ([f"{AK}, {SK}, {TOKEN}"], TOKEN, None),
    "key_value_hw": ([f"HW_ACCESS_KEY={AK}", f"HW_SECRET_KEY={SK}"], None, None),
    "key_value_hw_export_quoted": ([f'export HW_ACCESS_KEY="{AK}"', f"export HW_SECRET_KEY='{SK}'",
                                    f'export HW_SECURITY_TOKEN="{TOKEN}"'], TOKEN, None),
    "key_value_sdk": ([f"HUAWEICLOUD_SDK_AK={AK}", f"HUAWEICLOUD_SDK_SK='{SK}'",
                       f'HUAWEICLOUD_SDK_SECURITY_TOKEN="{TOKEN}"', f"HUAWEICLOUD_SDK_PROJECT_ID={PROJECT}"],
                      TOKEN, PROJECT),
    "key_value_spaces_and_inline_comment": ([f"export  HW_ACCESS_KEY = {AK}", f"HW_SECRET_KEY={SK}   # from IAM"],
                                            None, None),
    "console_csv": (["User Name,Access Key Id,Secret Access Key", f"unit-test-user,{AK},{SK}"], None, None),
    "profile_ini": (["[basic]", f"ak = {AK}", f"sk = {SK}", f"security_token = {TOKEN}",
                     f"project_id = {PROJECT}"], TOKEN, PROJECT),
    "profile_ini_minimal": (["[basic]", f"ak={AK}", f"sk={SK}"], None, None),
}


def decorate(lines: list[str], *, bom: bool, crlf: bool, comments: bool) -> bytes:
    body = []
    if comments:
        body += ["# Huawei Cloud keys for the unit tests", ""]
    for index, line in enumerate(lines):
        body.append(line)
        if comments and index < len(lines) - 1:
            body += ["", "   # a comment between values", "   "]
    if comments:
        body += ["", "# end"]
    text = ("\r\n" if crlf else "\n").join(body) + ("\r\n" if crlf else "\n")
    return (BOM if bom else b"") + text.encode("utf-8")


DECORATIONS = {
    "plain": dict(bom=False, crlf=False, comments=False),
    "bom": dict(bom=True, crlf=False, comments=False),
    "crlf": dict(bom=False, crlf=True, comments=False),
    "comments": dict(bom=False, crlf=False, comments=True),
    "bom_crlf_comments": dict(bom=True, crlf=True, comments=True),
}

def _format_cases():
    for fmt in FORMATS:
        for deco in DECORATIONS:
            yield pytest.param(fmt, deco, id=f"{fmt}-{deco}")


@pytest.mark.parametrize("fmt, deco", list(_format_cases()))
def test_every_documented_file_format_is_read(tmp_path, fmt, deco):
    lines, token, project = FORMATS[fmt]
    path = write(tmp_path, "creds", decorate(lines, **DECORATIONS[deco]))
    credentials = m.load_credentials_file(path)
    assert (credentials.ak, credentials.sk, credentials.security_token) == (AK, SK, token)
    assert credentials.project_id == project
    assert path in credentials.source


@pytest.mark.parametrize("fmt", list(FORMATS))
def test_parse_credentials_text_tolerates_a_bom_in_the_text(fmt):
    lines, token, _ = FORMATS[fmt]
    credentials = m.parse_credentials_text("\ufeff" + "\n".join(lines) + "\n", "credentials file x")
    assert (credentials.ak, credentials.sk, credentials.security_token) == (AK, SK, token)


def test_three_line_file_accepts_a_token_with_base64_padding(tmp_path):
    padded = TOKEN + "=="
    path = write(tmp_path, "creds", f"{AK}\n{SK}\n{padded}\n")
    assert m.load_credentials_file(path).security_token == padded


@pytest.mark.parametrize("text", [f"HW_ACCESS_KEY={AK}\nHW_SECRET_KEY={SK}\nHW_SECURITY_TOKEN={TOKEN}==\n",
                                  f"{AK},{SK},{TOKEN}==\n",
                                  f"[basic]\nak={AK}\nsk={SK}\nsecurity_token={TOKEN}==\n"])
def test_other_formats_accept_a_token_with_base64_padding(text):
    assert m.parse_credentials_text(text, "f").security_token == TOKEN + "=="


def test_console_csv_with_a_security_token_column():
    text = f"User Name,Access Key Id,Secret Access Key,Security Token\nunit,{AK},{SK},{TOKEN}\n"
    credentials = m.parse_credentials_text(text, "f")
    assert (credentials.ak, credentials.sk, credentials.security_token) == (AK, SK, TOKEN)


def test_console_csv_columns_are_found_by_name_not_position():
    text = f"Secret Access Key,User Name,Access Key Id\r\n{SK},unit,{AK}\r\n"
    credentials = m.parse_credentials_text(text, "f")
    assert (credentials.ak, credentials.sk) == (AK, SK)


def test_profile_reads_the_basic_section_among_others():
    text = f"[other]\nak = {AK2}\nsk = {SK2}\n\n[basic]\nak = {AK}\nsk = {SK}\n"
    credentials = m.parse_credentials_text(text, "f")
    assert (credentials.ak, credentials.sk) == (AK, SK)


# ----------------------------------------------------------------------------------------------
# Errors: exit code 3, the file named, no key value anywhere
# ----------------------------------------------------------------------------------------------

BAD_CONTENTS = {
    "empty": b"",
    "only_blank_lines": b"\n\n  \n\r\n",
    "only_comments": b"# AK goes here\n# SK goes here\n\n",
    "one_line_only": f"{AK}\n".encode(),
    "one_line_only_with_comments": f"# keys\n{AK}\n# no SK\n".encode(),
    "one_line_too_many_commas": f"{AK},{SK},{TOKEN},extra\n".encode(),
    "one_line_empty_sk": f"{AK},\n".encode(),
    "four_lines": f"{AK}\n{SK}\n{TOKEN}\n{AK2}\n".encode(),
    "five_lines": f"{AK}\n{SK}\n{TOKEN}\n{AK2}\n{SK2}\n".encode(),
    "mixed_formats": f"{AK}\nHW_SECRET_KEY={SK}\n".encode(),
    "csv_without_secret_column": f"User Name,Access Key Id,Secret\nunit,{AK},{SK}\n".encode(),
    "csv_header_without_row": b"User Name,Access Key Id,Secret Access Key\n",
    "csv_short_row": f"User Name,Access Key Id,Secret Access Key\nunit,{AK}\n".encode(),
    "key_value_without_sk": f"HW_ACCESS_KEY={AK}\nHW_SECURITY_TOKEN={TOKEN}\n".encode(),
    "key_value_without_ak": f"export HW_SECRET_KEY={SK}\n".encode(),
    "key_value_with_a_stray_line": f"HW_ACCESS_KEY={AK}\n{SK}\nHW_SECRET_KEY={SK}\n".encode(),
    "key_value_empty_sk": f"HW_ACCESS_KEY={AK}\nHW_SECRET_KEY=\n".encode(),
    "value_with_a_space": f"{AK} {SK}\n{SK}\n".encode(),
    "non_ascii_value": f"{AK}\u00e9\n{SK}\n".encode(),
    "profile_without_basic": f"[default]\nak = {AK}\nsk = {SK}\n".encode(),
    "profile_basic_without_sk": f"[basic]\nak = {AK}\n".encode(),
    "profile_not_ini": f"[basic]\n{AK}\n{SK}\n".encode(),
    "binary_nul": f"{AK}\n".encode() + b"\x00\x01\x02" + f"\n{SK}\n".encode(),
    "not_utf8": f"{AK}\n".encode() + f"{SK}\u00e9\n".encode("latin-1"),
    "utf16": f"{AK}\n{SK}\n".encode("utf-16"),
    "over_64_kib": f"{AK}\n{SK}\n".encode() + b"#" * (64 * 1024),
}


@pytest.mark.parametrize("name", list(BAD_CONTENTS))
def test_bad_file_is_a_credentials_error_naming_the_file_without_any_key(tmp_path, name):
    path = write(tmp_path, f"bad-{name}", BAD_CONTENTS[name])
    with pytest.raises(m.CredentialsError) as caught:
        m.load_credentials_file(path)
    assert caught.value.exit_code == 3
    assert path in str(caught.value)
    assert_no_secret(caught.value)


def test_a_file_of_exactly_64_kib_is_still_read(tmp_path):
    head = f"{AK}\n{SK}\n".encode()
    path = write(tmp_path, "big", head + b"#" * (64 * 1024 - len(head)))
    assert m.load_credentials_file(path).ak == AK


def test_a_directory_is_a_credentials_error(tmp_path):
    folder = tmp_path / "a-folder"
    folder.mkdir()
    with pytest.raises(m.CredentialsError) as caught:
        m.load_credentials_file(str(folder))
    assert caught.value.exit_code == 3
    assert str(folder) in str(caught.value)
    assert "directory" in str(caught.value)


def test_a_missing_file_is_a_credentials_error(tmp_path):
    path = str(tmp_path / "no-such-file")
    with pytest.raises(m.CredentialsError) as caught:
        m.load_credentials_file(path)
    assert caught.value.exit_code == 3
    assert path in str(caught.value)
    assert "does not exist" in str(caught.value)


@POSIX
@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root reads any file")
def test_an_unreadable_file_is_a_credentials_error(tmp_path):
    path = write(tmp_path, "locked", f"{AK}\n{SK}\n", mode=0o000)
    with pytest.raises(m.CredentialsError) as caught:
        m.load_credentials_file(path)
    assert path in str(caught.value)
    assert_no_secret(caught.value)


def test_error_names_the_line_number_but_not_its_content(tmp_path):
    path = write(tmp_path, "kv", f"HW_ACCESS_KEY={AK}\n# comment\n{SK}\nHW_SECRET_KEY={SK}\n")
    with pytest.raises(m.CredentialsError) as caught:
        m.load_credentials_file(path)
    assert "line 3" in str(caught.value)
    assert_no_secret(caught.value)


def test_read_credentials_file_strips_the_bom_and_keeps_crlf_for_the_parser(tmp_path):
    path = write(tmp_path, "raw", BOM + b"a\r\nb\r\n")
    assert m.read_credentials_file(path) == "a\r\nb\r\n"


# ----------------------------------------------------------------------------------------------
# Precedence: file > HW_* > HUAWEICLOUD_SDK_* > profile
# ----------------------------------------------------------------------------------------------


@pytest.fixture
def profile(tmp_path) -> str:
    return write(tmp_path, "profile", f"[basic]\nak = {AK3}\nsk = {SK3}\nproject_id = {PROJECT}\n")


def test_credentials_file_wins_over_every_environment_variable(tmp_path, profile):
    path = write(tmp_path, "creds", f"{AK}\n{SK}\n")
    env = {"HW_ACCESS_KEY": AK2, "HW_SECRET_KEY": SK2, "HUAWEICLOUD_SDK_AK": AK3, "HUAWEICLOUD_SDK_SK": SK3,
           "HUAWEICLOUD_SDK_CREDENTIALS_FILE": profile}
    credentials = m.load_credentials(path, env)
    assert (credentials.ak, credentials.sk) == (AK, SK)
    assert path in credentials.source


def test_a_missing_credentials_file_is_an_error_even_when_env_keys_exist(tmp_path):
    env = {"HW_ACCESS_KEY": AK2, "HW_SECRET_KEY": SK2}
    with pytest.raises(m.CredentialsError):
        m.load_credentials(str(tmp_path / "missing"), env)


def test_hw_env_wins_over_sdk_env_and_profile(profile):
    env = {"HW_ACCESS_KEY": AK, "HW_SECRET_KEY": SK, "HW_SECURITY_TOKEN": TOKEN,
           "HUAWEICLOUD_SDK_AK": AK2, "HUAWEICLOUD_SDK_SK": SK2, "HUAWEICLOUD_SDK_CREDENTIALS_FILE": profile}
    credentials = m.load_credentials(None, env)
    assert (credentials.ak, credentials.sk, credentials.security_token) == (AK, SK, TOKEN)
    assert "HW_ACCESS_KEY" in credentials.source


def test_sdk_env_wins_over_the_profile(profile):
    env = {"HUAWEICLOUD_SDK_AK": AK2, "HUAWEICLOUD_SDK_SK": SK2, "HUAWEICLOUD_SDK_SECURITY_TOKEN": TOKEN,
           "HUAWEICLOUD_SDK_CREDENTIALS_FILE": profile}
    credentials = m.load_credentials(None, env)
    assert (credentials.ak, credentials.sk, credentials.security_token) == (AK2, SK2, TOKEN)
    assert "HUAWEICLOUD_SDK_AK" in credentials.source


def test_profile_named_by_env_is_read_with_its_project_id(profile):
    credentials = m.load_credentials(None, {"HUAWEICLOUD_SDK_CREDENTIALS_FILE": profile})
    assert (credentials.ak, credentials.sk, credentials.project_id) == (AK3, SK3, PROJECT)
    assert profile in credentials.source


def test_default_profile_in_home_is_read(isolated_home):
    folder = isolated_home / ".huaweicloud"
    folder.mkdir()
    write(folder, "credentials", f"[basic]\nak = {AK}\nsk = {SK}\nsecurity_token = {TOKEN}\n")
    credentials = m.load_credentials(None, {})
    assert (credentials.ak, credentials.sk, credentials.security_token) == (AK, SK, TOKEN)


def test_a_missing_profile_named_by_env_is_an_error_naming_it(tmp_path):
    path = str(tmp_path / "nowhere" / "credentials")
    with pytest.raises(m.CredentialsError) as caught:
        m.load_credentials(None, {"HUAWEICLOUD_SDK_CREDENTIALS_FILE": path})
    assert path in str(caught.value)


def test_environment_values_are_stripped():
    credentials = m.load_credentials(None, {"HW_ACCESS_KEY": f"  {AK}\n", "HW_SECRET_KEY": f"\t{SK} "})
    assert (credentials.ak, credentials.sk, credentials.security_token) == (AK, SK, None)


@pytest.mark.parametrize("env, missing", [
    ({"HW_ACCESS_KEY": AK}, "HW_SECRET_KEY"),
    ({"HW_SECRET_KEY": SK}, "HW_ACCESS_KEY"),
    ({"HW_ACCESS_KEY": AK, "HUAWEICLOUD_SDK_AK": AK2, "HUAWEICLOUD_SDK_SK": SK2}, "HW_SECRET_KEY"),
    ({"HUAWEICLOUD_SDK_AK": AK2}, "HUAWEICLOUD_SDK_SK"),
    ({"HUAWEICLOUD_SDK_SK": SK2}, "HUAWEICLOUD_SDK_AK"),
])
def test_half_a_key_pair_in_the_environment_is_an_error(env, missing):
    with pytest.raises(m.CredentialsError) as caught:
        m.load_credentials(None, env)
    assert caught.value.exit_code == 3
    assert missing in str(caught.value)
    assert_no_secret(caught.value)


def test_no_credentials_anywhere_is_an_error_with_a_helpful_hint():
    with pytest.raises(m.CredentialsError) as caught:
        m.load_credentials(None, {})
    assert caught.value.exit_code == 3
    hint = caught.value.hint or ""
    for needle in ("HW_ACCESS_KEY", "HW_SECRET_KEY", "--credentials-file"):
        assert needle in hint


def test_blank_environment_values_count_as_absent():
    with pytest.raises(m.CredentialsError) as caught:
        m.load_credentials(None, {"HW_ACCESS_KEY": "  ", "HW_SECRET_KEY": ""})
    assert "no Huawei Cloud credentials" in str(caught.value)


@pytest.mark.parametrize("env", [
    {"HW_ACCESS_KEY": f"{AK} x", "HW_SECRET_KEY": SK},
    {"HW_ACCESS_KEY": AK, "HW_SECRET_KEY": f"{SK}\u00e9"},
    {"HW_ACCESS_KEY": AK, "HW_SECRET_KEY": SK, "HW_SECURITY_TOKEN": f"{TOKEN} {TOKEN}"},
])
def test_environment_keys_with_spaces_or_non_ascii_are_refused_without_echoing_them(env):
    with pytest.raises(m.CredentialsError) as caught:
        m.load_credentials(None, env)
    assert_no_secret(caught.value)


# ----------------------------------------------------------------------------------------------
# Credentials never show their values
# ----------------------------------------------------------------------------------------------


def test_repr_and_str_of_credentials_hide_every_secret():
    credentials = m.Credentials(AK, SK, TOKEN, "credentials file /tmp/x", PROJECT)
    for text in (repr(credentials), str(credentials), f"{credentials}", f"{credentials!r}",
                 repr([credentials]), repr({"c": credentials})):
        for secret in (AK, SK, TOKEN):
            assert secret not in text
    assert "/tmp/x" in repr(credentials)


def test_secrets_lists_exactly_the_values_to_redact():
    assert m.Credentials(AK, SK, TOKEN, "s").secrets() == (AK, SK, TOKEN)
    assert m.Credentials(AK, SK, None, "s").secrets() == (AK, SK)


# ----------------------------------------------------------------------------------------------
# Permission warning
# ----------------------------------------------------------------------------------------------


@POSIX
@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o666])
def test_permission_warning_when_group_or_others_can_read(tmp_path, mode):
    path = write(tmp_path, "creds", f"{AK}\n{SK}\n", mode=mode)
    warning = m.file_permission_warning(path)
    assert warning is not None
    assert path in warning
    assert "chmod 600" in warning
    for secret in (AK, SK):
        assert secret not in warning


@POSIX
@pytest.mark.parametrize("mode", [0o600, 0o400, 0o700])
def test_no_permission_warning_for_owner_only_files(tmp_path, mode):
    path = write(tmp_path, "creds", f"{AK}\n{SK}\n", mode=mode)
    assert m.file_permission_warning(path) is None


def test_no_permission_warning_for_a_missing_file(tmp_path):
    assert m.file_permission_warning(str(tmp_path / "missing")) is None


# ----------------------------------------------------------------------------------------------
# Properties: any content is either credentials or a CredentialsError, never a crash
# ----------------------------------------------------------------------------------------------

PROPERTY = settings(deadline=None, max_examples=200,
                    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


@pytest.fixture(scope="module")
def scratch(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("hypothesis-credentials")


def _load_outcome(folder: Path, data: bytes):
    path = write(folder, "candidate", data)
    try:
        credentials = m.load_credentials_file(path)
    except m.CredentialsError as exc:
        assert exc.exit_code == 3
        assert path in str(exc)
        return exc
    assert isinstance(credentials, m.Credentials)
    assert credentials.ak and credentials.sk
    return credentials


@PROPERTY
@given(text=st.text())
def test_any_text_is_credentials_or_a_credentials_error(scratch, text):
    _load_outcome(scratch, text.encode("utf-8", errors="surrogatepass"))


@PROPERTY
@given(data=st.binary(max_size=2048))
def test_any_bytes_are_credentials_or_a_credentials_error(scratch, data):
    _load_outcome(scratch, data)


FRAGMENTS = [
    "User Name,Access Key Id,Secret Access Key", "Security Token", "[basic]", "[other]", "ak", "sk",
    "security_token", "project_id", "=", ",", " ", "\t", "#", ";", '"', "'", "export ", "HW_ACCESS_KEY",
    "HW_SECRET_KEY", "HUAWEICLOUD_SDK_AK", "HUAWEICLOUD_SDK_SK", AK, SK, TOKEN, "\n", "\r\n", "\r", "\u00e9",
    "\ufeff", "[", "]", ":", "%", "\\", "\x0c", "\u2028",
]


@settings(PROPERTY, derandomize=True, max_examples=300)
@given(parts=st.lists(st.sampled_from(FRAGMENTS), max_size=40))
def test_format_like_text_is_credentials_or_a_credentials_error_and_never_leaks(scratch, parts):
    outcome = _load_outcome(scratch, "".join(parts).encode("utf-8"))
    if isinstance(outcome, m.CredentialsError):
        assert_no_secret(outcome)


@pytest.mark.parametrize("text", [
    f"User Name,Access Key Id,Secret Access Key\r{'unit'},{AK},{SK}\r",
    "Access Key Id,Secret Access Key\rx",
    "\rUser Name,Access Key Id,Secret Access Key",  # the minimal case Hypothesis finds
])
def test_console_csv_with_bare_cr_line_breaks_never_crashes(tmp_path, text):
    outcome = _load_outcome(tmp_path, text.encode())
    assert isinstance(outcome, (m.Credentials, m.CredentialsError))
