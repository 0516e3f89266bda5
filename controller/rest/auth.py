"""Who is calling: static bearer tokens mapped to a project and a role.

Loom has no Keystone. An operator gives `--auth-tokens FILE` (YAML or JSON):

    s3cret-admin: {project_id: ops, role: admin}
    tenant-a-token: {project_id: tenant-a, role: member}

Tokens arrive in `X-Auth-Token` (Neutron's header) or `Authorization: Bearer`.
Without a file every request is the admin of DEFAULT_PROJECT_ID; the launcher
then listens on loopback only, so "no auth" never means "open to the network".
"""

from __future__ import annotations

import hmac
import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Protocol

import yaml
from webob import Request

from controller.rest.errors import Unauthorized

DEFAULT_PROJECT_ID = "default"
ROLES = ("admin", "member")


class AuthConfigError(ValueError):
    """The tokens file is missing or malformed; the message names the file and the problem."""


@dataclass(frozen=True)
class Principal:
    project_id: str
    role: str = "member"

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"


class Authenticator(Protocol):
    def authenticate(self, request: Request) -> Principal: ...


class NoAuth:
    """Every caller is the admin of one project: for loopback-only deployments and tests."""

    def __init__(self, project_id: str = DEFAULT_PROJECT_ID) -> None:
        self.principal = Principal(project_id, "admin")

    def authenticate(self, request: Request) -> Principal:
        return self.principal


def request_token(request: Request) -> Optional[str]:
    token = request.headers.get("X-Auth-Token")
    if token:
        return token.strip()
    scheme, _, value = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    return None


class TokenAuth:
    """Static token table. Unknown or missing token: 401."""

    def __init__(self, tokens: Mapping[str, Principal]) -> None:
        self._tokens = dict(tokens)

    @classmethod
    def load(cls, path: str | Path) -> TokenAuth:
        path = Path(path)
        try:
            text = path.read_text()
        except OSError as exc:
            raise AuthConfigError(f"auth tokens file {path}: {exc.strerror}") from exc
        kind = "JSON" if path.suffix == ".json" else "YAML"
        try:
            data: Any = json.loads(text) if kind == "JSON" else yaml.safe_load(text)
        except (ValueError, yaml.YAMLError) as exc:
            raise AuthConfigError(
                f"auth tokens file {path}: not valid {kind}: {str(exc).splitlines()[0]}"
            ) from exc
        return cls(parse_tokens(data, str(path)))

    def authenticate(self, request: Request) -> Principal:
        token = request_token(request)
        if token is None:
            raise Unauthorized(
                "Authentication required: send X-Auth-Token or Authorization: Bearer",
                headers={"WWW-Authenticate": "Bearer"},
            )
        for known, principal in self._tokens.items():
            if hmac.compare_digest(known.encode(), token.encode()):
                return principal
        raise Unauthorized(
            "The request you have made requires authentication: unknown token",
            headers={"WWW-Authenticate": "Bearer"},
        )


def parse_tokens(data: Any, source: str = "tokens") -> dict[str, Principal]:
    """{token: {project_id, role}} -> {token: Principal}, with a precise error on any bad entry."""
    if isinstance(data, dict) and set(data) == {"tokens"}:
        data = data["tokens"]
    if not isinstance(data, dict) or not data:
        raise AuthConfigError(
            f"auth tokens file {source}: expected a non-empty mapping "
            "of token -> {project_id, role}"
        )
    out: dict[str, Principal] = {}
    for token, entry in data.items():
        where = f"auth tokens file {source}: token {str(token)[:4]}…"
        if not isinstance(token, str) or len(token) < 8:
            raise AuthConfigError(f"{where}: tokens must be strings of at least 8 characters")
        if not isinstance(entry, dict):
            raise AuthConfigError(
                f"{where}: expected {{project_id, role}}, got {type(entry).__name__}"
            )
        unknown = set(entry) - {"project_id", "role"}
        if unknown:
            raise AuthConfigError(f"{where}: unknown key(s) {sorted(unknown)}")
        project, role = entry.get("project_id"), entry.get("role", "member")
        if not isinstance(project, str) or not project:
            raise AuthConfigError(f"{where}: project_id must be a non-empty string")
        if role not in ROLES:
            raise AuthConfigError(f"{where}: role must be one of {list(ROLES)}, got {role!r}")
        out[token] = Principal(project, role)
    return out
