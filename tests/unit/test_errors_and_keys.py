"""venue/errors.py classification of the SDK's answers, and venue/keys.py key handling."""
from __future__ import annotations

import json
import os

import pytest

from hedge.config import ConfigError, parse_config
from venue import errors
from venue.errors import SendOutcome, classify_code, classify_http_status, classify_sdk_error
from venue.keys import Secret, private_key, read_key_file, write_key_file

# ---- errors -----------------------------------------------------------------------------------


def sdk_err(code: int, message: str) -> str:
    """What SignerClient returns as `err` for an HTTP 400 (the last line of BadRequestException)."""
    return f"HTTP response body: code={code} message='{message}' additional_properties={{}}"


@pytest.mark.parametrize("code, message, kind", [
    (21104, "invalid nonce", errors.RETRYABLE),
    (23000, "too many requests", errors.RETRYABLE),
    (21506, "too many pending txs", errors.RETRYABLE),
    (21706, "invalid order base or quote amount", errors.REJECTED),
    (21602, "invalid market index", errors.REJECTED),
    (21739, "not enough margin", errors.REJECTED),
    (21120, "invalid signature", errors.REJECTED),
    (29500, "internal error: KeyError", errors.IN_DOUBT),   # unknown code: never a definite reject
    (12345, "something new", errors.IN_DOUBT),
])
def test_sdk_error_string_is_classified(code, message, kind):
    outcome = classify_sdk_error(sdk_err(code, message))
    assert outcome == SendOutcome(kind, code, message)
    assert not outcome.accepted
    assert f"code={code}" in outcome.describe() and message in outcome.describe()


def test_message_with_escaped_quote_is_read_whole():
    outcome = classify_sdk_error(r"HTTP response body: code=21501 message='invalid tx info: can\'t parse' x")
    assert outcome.kind == errors.REJECTED and outcome.code == 21501 and "parse" in outcome.message


def test_invalid_nonce_words_are_retryable_whatever_the_code():
    assert classify_code(20001, "invalid nonce for key 3").kind == errors.RETRYABLE


def test_signer_local_error_is_a_definite_reject():
    outcome = classify_sdk_error("BaseAmount should not be less than 1")
    assert outcome.kind == errors.REJECTED and outcome.code is None
    assert "signer refused" in outcome.message


def test_code_200_is_accepted():
    assert classify_code(200, "ok").accepted


@pytest.mark.parametrize("status, kind", [(429, errors.RETRYABLE), (502, errors.IN_DOUBT),
                                          (500, errors.IN_DOUBT), (503, errors.IN_DOUBT), (None, errors.IN_DOUBT)])
def test_http_status_classification(status, kind):
    outcome = classify_http_status(status, '{"code":502,"message":"bad gateway"}')
    assert outcome.kind == kind


# ---- keys -------------------------------------------------------------------------------------

def cfg_with(keys_file: str | None):
    return parse_config({
        "lighter": {"base_url": "http://127.0.0.1:1", "ws_url": "ws://127.0.0.1:1/stream"},
        "redis": {"url": "redis://127.0.0.1:6379/0"}, "keys_file": keys_file,
        "accounts": {"account_a": {"account_index": 281001, "api_key_index": 3,
                                   "private_key_env": "LH_TEST_UNIT_A_KEY"},
                     "account_b": {"account_index": 281002, "api_key_index": 4,
                                   "private_key_env": "LH_TEST_UNIT_B_KEY"}},
        "markets": {"ETH": {"quantity": "0.05"}}, "strategy": {}})


@pytest.fixture
def key_file(tmp_path, monkeypatch):
    monkeypatch.delenv("LH_TEST_UNIT_A_KEY", raising=False)
    monkeypatch.delenv("LH_TEST_UNIT_B_KEY", raising=False)
    path = str(tmp_path / "keys.json")
    write_key_file(path, {"281001": {"api_key_index": 3, "private_key": "0xFILEKEY", "public_key": "0xpub"}})
    return path


def test_written_key_file_is_0600(key_file):
    assert os.stat(key_file).st_mode & 0o777 == 0o600


def test_key_from_file(key_file):
    cfg = cfg_with(key_file)
    key = private_key(cfg, cfg.account_a)
    assert key == "0xFILEKEY" and isinstance(key, Secret)


def test_env_var_wins_over_file(key_file, monkeypatch):
    monkeypatch.setenv("LH_TEST_UNIT_A_KEY", " 0xENVKEY\n")
    cfg = cfg_with(key_file)
    assert private_key(cfg, cfg.account_a) == "0xENVKEY"


def test_world_readable_key_file_is_refused_naming_chmod(key_file):
    os.chmod(key_file, 0o644)
    cfg = cfg_with(key_file)
    with pytest.raises(ConfigError, match="chmod 600") as err:
        private_key(cfg, cfg.account_a)
    assert "0xFILEKEY" not in str(err.value)


def test_group_readable_key_file_is_refused(key_file):
    os.chmod(key_file, 0o640)
    with pytest.raises(ConfigError, match="0600"):
        read_key_file(key_file)


def test_missing_key_names_the_env_var_and_the_file(key_file):
    cfg = cfg_with(key_file)
    with pytest.raises(ConfigError) as err:
        private_key(cfg, cfg.account_b)
    assert "LH_TEST_UNIT_B_KEY" in str(err.value) and key_file in str(err.value)
    assert "accounts.account_b" in str(err.value)


def test_key_index_mismatch_is_refused(tmp_path, monkeypatch):
    monkeypatch.delenv("LH_TEST_UNIT_A_KEY", raising=False)
    path = str(tmp_path / "keys.json")
    write_key_file(path, {"281001": {"api_key_index": 9, "private_key": "0xFILEKEY"}})
    cfg = cfg_with(path)
    with pytest.raises(ConfigError, match="api_key_index") as err:
        private_key(cfg, cfg.account_a)
    assert "0xFILEKEY" not in str(err.value)


def test_unreadable_json_is_a_config_error_without_content(tmp_path):
    path = tmp_path / "keys.json"
    path.write_text('{"281001": {"private_key": "0xFILEKEY"')
    path.chmod(0o600)
    with pytest.raises(ConfigError, match="not readable JSON") as err:
        read_key_file(str(path))
    assert "0xFILEKEY" not in str(err.value)


def test_secret_repr_hides_the_value():
    secret = Secret("0xTOPSECRET")
    assert "TOPSECRET" not in repr(secret)
    assert "TOPSECRET" not in repr({"key": secret}) and "TOPSECRET" not in f"{secret!r}"
    assert secret == "0xTOPSECRET"  # still usable as the key itself
    assert json.dumps(secret) == '"0xTOPSECRET"'


@pytest.mark.parametrize("status, body, kind, code", [
    (200, '{"code": 200, "message": "ok", "tx_hash": "ab12"}', errors.ACCEPTED, 200),
    (400, '{"code": 21706, "message": "invalid order base or quote amount"}', errors.REJECTED, 21706),
    (400, '{"code": 21104, "message": "invalid nonce"}', errors.RETRYABLE, 21104),
    (400, '{"code": 29999, "message": "something new"}', errors.IN_DOUBT, 29999),
    (200, 'not json', errors.IN_DOUBT, None),
    (400, '{"message": "no code"}', errors.IN_DOUBT, None),
    (429, 'slow down', errors.RETRYABLE, errors.TOO_MANY_REQUESTS),
    (502, '<html>bad gateway</html>', errors.IN_DOUBT, None),
])
def test_send_tx_answer_is_classified(status, body, kind, code):
    outcome = errors.classify_response(status, body)
    assert (outcome.kind, outcome.code) == (kind, code), outcome.describe()
    if kind == errors.ACCEPTED:
        assert outcome.tx_hash == "ab12"


def test_sendtx_proxy_comes_from_the_environment_once_like_the_sdks(monkeypatch):
    from venue.client import _env_proxy
    for name in ("http_proxy", "https_proxy", "no_proxy", "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "ALL_PROXY",
                 "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    assert _env_proxy("https://mainnet.zklighter.elliot.ai/api/v1/sendTx") is None
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.internal:3128")
    assert _env_proxy("https://mainnet.zklighter.elliot.ai/api/v1/sendTx") == "http://proxy.internal:3128"
    monkeypatch.setenv("NO_PROXY", "mainnet.zklighter.elliot.ai")
    assert _env_proxy("https://mainnet.zklighter.elliot.ai/api/v1/sendTx") is None
