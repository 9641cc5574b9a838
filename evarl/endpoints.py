"""Where an API key may go: the checks every OpenAI-compatible endpoint passes before a request is made.

Bottom layer (standard library only), so that config validation, the client (`evarl.generation.openai_api`)
and the CLIs apply the same rules:

- the API key is read only from the environment variable named by ``api_key_env`` (default
  ``OPENAI_API_KEY``); a config holds the variable's *name*, never the key, so ``config.yaml``, manifests and
  logs cannot contain it. A name that does not look like an environment variable (e.g. a pasted key) is refused
  without echoing it;
- a key is sent only over ``https://`` or to a loopback address (``127.0.0.0/8``, ``::1``, ``localhost``); a key
  set for a plain-``http://`` endpoint on any other host is an error naming the URL (unset the variable, point
  ``api_key_env`` at an unset one, or use https);
- credentials inside the URL (``https://user:secret@host``) are refused, since URLs are written to configs and
  manifests;
- :func:`redact` removes the key from any text that may be shown (server error bodies can echo it).
"""

from __future__ import annotations

import ipaddress
import os
import re
from urllib.parse import urlsplit

DEFAULT_API_KEY_ENV = "OPENAI_API_KEY"
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def is_loopback_host(host: str | None) -> bool:
    """Whether ``host`` is ``localhost`` or a loopback IP (127.0.0.0/8, ::1)."""
    if not host:
        return False
    host = host.strip("[]").lower()
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def api_key_env_problem(api_key_env: str) -> str | None:
    """Why ``api_key_env`` cannot name an environment variable (the value is never repeated), else None."""
    if not isinstance(api_key_env, str) or not _ENV_NAME.fullmatch(api_key_env):
        return (
            "api_key_env must be the NAME of an environment variable holding the key (letters, digits and _, "
            "e.g. OPENAI_API_KEY), not the key itself; keys are never read from configs"
        )
    return None


def read_api_key(api_key_env: str = DEFAULT_API_KEY_ENV) -> str | None:
    """The key in the environment variable ``api_key_env``; None when it is unset or empty."""
    return os.environ.get(api_key_env) or None


def endpoint_problem(url: str, api_key_env: str = DEFAULT_API_KEY_ENV) -> str | None:
    """Why ``url`` cannot be used with the key named by ``api_key_env``, as one line naming the URL; else None."""
    bad_env = api_key_env_problem(api_key_env)
    if bad_env:
        return bad_env
    if not isinstance(url, str) or not url.startswith(("http://", "https://")):
        return f"endpoint must be an http(s) URL like http://127.0.0.1:8000/v1, got {url!r}"
    parts = urlsplit(url)
    if parts.username is not None or parts.password is not None:
        return (
            f"endpoint {parts.scheme}://{parts.hostname}{parts.path}: credentials in the URL are not allowed "
            f"(URLs are written to configs and manifests); put the key in the environment variable {api_key_env}"
        )
    if not parts.hostname:
        return f"endpoint {url}: no host name"
    if parts.scheme == "http" and read_api_key(api_key_env) and not is_loopback_host(parts.hostname):
        return (
            f"endpoint {url}: refusing to send the API key from ${api_key_env} over plain http to a "
            "non-loopback host; use https, or for a server that needs no key unset the variable (or point "
            "api_key_env / --api-key-env at an unset one)"
        )
    return None


def redact(text: str, key: str | None) -> str:
    """``text`` with every occurrence of ``key`` replaced by ``***``."""
    return text.replace(key, "***") if key else text
