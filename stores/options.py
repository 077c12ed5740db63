"""fsspec storage options for a store URL: parsed from ``key=value`` flags and a JSON file, never credentials.

Storage options travel with every task to every worker and are named in
commands and config files; credentials do not belong there. They come from the
environment or the backend's standard configuration instead (for S3:
``AWS_ACCESS_KEY_ID`` / ``AWS_SECRET_ACCESS_KEY`` / ``AWS_SESSION_TOKEN``,
``AWS_PROFILE`` or ``~/.aws/credentials``, an instance or pod role).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .errors import AgencerdasError

#: Option names that carry a secret in the common fsspec backends (s3fs, gcsfs, adlfs, sftp/ftp).
CREDENTIAL_OPTIONS = frozenset({
    "key", "secret", "token", "password", "aws_access_key_id", "aws_secret_access_key", "aws_session_token",
    "session_token", "account_key", "sas_token", "client_secret", "connection_string",
})


def parse_value(text: str) -> Any:
    """``true``, ``3``, ``{"a": 1}`` as JSON; anything that is not JSON (a URL, a region) as the string."""
    try:
        return json.loads(text)
    except ValueError:
        return text


def parse_storage_options(pairs: list[str] | None = None, path: str | Path | None = None) -> dict[str, Any]:
    """Options from the JSON object in ``path`` (if given), then ``key=value`` pairs on top.

    Values of pairs are JSON when they parse as JSON (``anon=true``, ``client_kwargs={"region_name": "eu-west-1"}``),
    else strings (``endpoint_url=https://minio.internal:9000``). Credentials are refused (see :func:`check_no_credentials`).
    """
    options: dict[str, Any] = {}
    if path is not None:
        try:
            loaded = json.loads(Path(path).read_text())
        except OSError as exc:
            raise AgencerdasError(f"cannot read storage options file {path}: {exc.strerror or exc}") from None
        except ValueError as exc:
            raise AgencerdasError(f"storage options file {path} is not valid JSON: {exc}") from None
        if not isinstance(loaded, dict):
            raise AgencerdasError(f"storage options file {path} must hold a JSON object, got {type(loaded).__name__}")
        options.update(loaded)
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise AgencerdasError(f"--storage-option expects key=value, got {pair!r}")
        options[key] = parse_value(value)
    check_no_credentials(options)
    return options


def check_no_credentials(options: dict[str, Any], where: str = "") -> None:
    """Refuse options (at any nesting depth, e.g. in ``client_kwargs``) whose name carries a secret."""
    for name, value in options.items():
        if str(name).lower() in CREDENTIAL_OPTIONS:
            raise AgencerdasError(
                f"storage option {where + str(name)!r} is a credential; storage options travel to every worker and may be "
                "logged, so agencerdas takes credentials only from the environment or the backend's standard config "
                "(for S3: AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY / AWS_SESSION_TOKEN, AWS_PROFILE or "
                "~/.aws/credentials; `profile=NAME` selects a profile)"
            )
        if isinstance(value, dict):
            check_no_credentials(value, f"{where}{name}.")
