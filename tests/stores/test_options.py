"""Storage options from `--storage-option key=value` and a JSON file; credentials are refused."""

from __future__ import annotations

import json

import pytest

from agencerdas.stores.errors import AgencerdasError
from agencerdas.stores.options import parse_storage_options


def test_pairs_are_typed_as_json_when_they_parse_and_override_the_file(tmp_path):
    path = tmp_path / "s3.json"
    path.write_text(json.dumps({"endpoint_url": "http://from-file:9000", "client_kwargs": {"region_name": "eu-west-1"},
                                "default_block_size": 1024}))
    options = parse_storage_options(
        ["endpoint_url=https://minio.internal:9000", "anon=false", "requester_pays=true", "profile=training",
         "max_concurrency=8", 'config_kwargs={"max_pool_connections": 64}', "token_path=a=b"],
        path,
    )
    assert options == {
        "endpoint_url": "https://minio.internal:9000", "client_kwargs": {"region_name": "eu-west-1"},
        "default_block_size": 1024, "anon": False, "requester_pays": True, "profile": "training",
        "max_concurrency": 8, "config_kwargs": {"max_pool_connections": 64}, "token_path": "a=b",
    }
    assert parse_storage_options(None) == {} and parse_storage_options([]) == {}


@pytest.mark.parametrize("pairs", [["secret=abc"], ["key=AKIA123"], ["token=xyz"], ["password=hunter2"],
                                   ['client_kwargs={"aws_secret_access_key": "abc"}'], ["AWS_SESSION_TOKEN=abc"]])
def test_credentials_are_refused(pairs):
    with pytest.raises(AgencerdasError, match="is a credential.*environment"):
        parse_storage_options(pairs)


@pytest.mark.parametrize(("content", "message"), [
    ("{not json", "not valid JSON"), ('["a list"]', "must hold a JSON object"), (None, "cannot read"),
])
def test_bad_options_files_are_named(tmp_path, content, message):
    path = tmp_path / "options.json"
    if content is not None:
        path.write_text(content)
    with pytest.raises(AgencerdasError, match=message):
        parse_storage_options([], path)
    with pytest.raises(AgencerdasError, match="expects key=value"):
        parse_storage_options(["endpoint_url"])
