"""Text that is not what it claims: lone surrogate escapes and invalid UTF-8 in REST bodies and config.json, configs
nested past any parser's depth, names that would forge JSON or cut lines, dimensions beyond int64. Each is a clear
error, and the server (and its config API) keeps serving."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import models
import pytest
from conftest import RunningServer

GOOD = {"model_config_list": [{"config": {"name": "m", "base_path": "m"}}]}
INFER = '{"id": %s, "inputs": [{"name": "x", "shape": [1, 4], "datatype": %s, "data": [1, 2, 3, 4]}]}'


@pytest.fixture
def server(repository: Path, serve: Any) -> RunningServer:
    models.save(models.add_mul(), repository, "m")
    running: RunningServer = serve(GOOD)
    return running


def still_serving(server: RunningServer) -> None:
    status, _, body = server.http("POST", "/v2/models/m/infer", INFER % ('"ok"', '"FP32"'))
    assert status == 200 and json.loads(body)["outputs"][0]["data"] == [4, 6, 8, 10]
    status, _, body = server.http("GET", "/v1/config")
    assert status == 200 and set(json.loads(body)) == {"m"}


@pytest.mark.parametrize(
    "body",
    [
        (INFER % ('"ok"', '"\\ud800"')).encode(),  # a lone surrogate escape as the datatype
        (INFER % ('"\\ud800"', '"FP32"')).encode(),  # ... as the id, echoed in the answer
        (INFER % ('"\\udc00x"', '"FP32"')).encode(),  # a lone low surrogate
        (INFER % ('"a', '"FP32"')).encode().replace(b'"a', b'"\xed\xa0\x80"'),  # invalid UTF-8 bytes in the id
    ],
)
def test_rest_bodies_with_text_that_is_not_unicode(server: RunningServer, body: bytes) -> None:
    for path in ("/v2/models/m/infer", "/v1/models/m:predict"):
        status, headers, answer = server.http("POST", path, body)
        assert headers["content-type"] == "application/json"
        error = json.loads(answer)["error"]  # the answer itself is valid JSON
        assert status == 412, (path, error)
        assert error.startswith(
            ("The file is not valid json - Error: The surrogate pair in string is invalid. Offset: ",
             "The file is not valid json - Error: Invalid encoding in string. Offset: ")
        ), (path, error)  # fmt: skip
    still_serving(server)


def test_a_lone_surrogate_beside_a_nan_literal(server: RunningServer) -> None:
    """TF Serving REST takes NaN, which sends the body to the json module: it too refuses lone surrogates."""
    body = '{"instances": [[NaN, 1, 2, 3]], "signature_name": "\\ud800"}'
    status, _, answer = server.http("POST", "/v1/models/m:predict", body)
    assert (status, json.loads(answer)["error"]) == (
        412, "The file is not valid json - Error: The surrogate pair in string is invalid."
    )  # fmt: skip


def reload(server: RunningServer, repository: Path, text: str) -> tuple[int, str]:
    (repository / "config.json").write_text(text, encoding="utf-8", errors="surrogatepass")
    status, _, body = server.http("POST", "/v1/config/reload")
    if status < 400:
        return status, ""
    answer = json.loads(body)  # OVMS's text as "error", what went wrong as "detail"
    assert answer["error"] == "Reloading config file failed. Check server logs for more info.", answer
    return status, answer["detail"]


def test_a_config_nested_past_any_parser_is_refused(server: RunningServer, repository: Path) -> None:
    deep = '{"model_config_list": ' + "[" * 100_000 + "]" * 100_000 + "}"
    status, error = reload(server, repository, deep)
    assert status == 412 and error == "The file is not valid json: config.json: nested too deeply", error
    still_serving(server)
    assert reload(server, repository, json.dumps(GOOD)) == (200, "")


def test_a_config_holding_a_lone_surrogate_is_refused_and_the_config_api_stays_sound(
    server: RunningServer, repository: Path
) -> None:
    document = {"model_config_list": [*GOOD["model_config_list"], {"config": {"name": "\ud800", "base_path": "m"}}]}
    status, error = reload(server, repository, json.dumps(document))  # json.dumps writes the escape \ud800
    assert status == 412, error
    assert 'the string "\\ud800" holds a lone surrogate escape, which is not Unicode' in error
    still_serving(server)
    (repository / "config.json").write_bytes(json.dumps(GOOD).encode().replace(b'"m"}', b'"m\xed\xa0\x80"}'))
    status, _, body = server.http("POST", "/v1/config/reload")
    detail = json.loads(body)["detail"]
    assert status == 412 and detail.startswith("The file is not valid json: config.json: not UTF-8 ("), detail
    assert "at byte " in detail
    assert reload(server, repository, json.dumps(GOOD)) == (200, "")
    still_serving(server)


def test_names_are_escaped_in_the_config_api_and_control_characters_refused(
    server: RunningServer, repository: Path
) -> None:
    forged = 'x" : {}, "injected'
    document = {"model_config_list": [*GOOD["model_config_list"], {"config": {"name": forged, "base_path": "m"}}]}
    assert reload(server, repository, json.dumps(document)) == (201, "")
    status, _, body = server.http("GET", "/v1/config")
    assert status == 200 and set(json.loads(body)) == {"m", forged}  # the name, not forged keys

    for name in ("nul\u0000name", "two\nlines"):
        document = {"model_config_list": [{"config": {"name": name, "base_path": "m"}}]}
        status, error = reload(server, repository, json.dumps(document))
        assert status == 412 and "a name may not hold control characters" in error, error
        assert set(json.loads(server.http("GET", "/v1/config")[2])) == {"m", forged}  # the running config serves


def test_a_dimension_beyond_int64_is_a_config_error_naming_the_key(server: RunningServer, repository: Path) -> None:
    document = {"model_config_list": [{"config": {"name": "m", "base_path": "m", "shape": "(1,99999999999999999999)"}}]}
    status, error = reload(server, repository, json.dumps(document))
    assert status >= 400
    assert "model_config_list[0].config.shape" in error and "is beyond 9223372036854775807" in error, error
    assert "TypeError" not in error


# --- REST bodies too large, or never sent ------------------------------------------------------------------------
