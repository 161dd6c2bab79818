"""Ray token authentication for every client shipyard starts or speaks for.

Ray 2.60 clusters started with `ray start --head` check a bearer token on the dashboard, the Jobs
API and gRPC. Each client must run with `RAY_AUTH_MODE=token` and find the token in (Ray's own
order) `$RAY_AUTH_TOKEN`, the file named by `$RAY_AUTH_TOKEN_PATH`, or `~/.ray/auth_token`.

Ray reads `RAY_AUTH_MODE` once per process (its config is cached), so in-process HTTP clients get
the token as an explicit `Authorization` header instead of relying on the environment; child
processes (`ray start`, `ray job submit`) get the environment. The token itself is never printed,
logged, or put into a job's runtime_env (which the dashboard shows to anyone who can read it).
"""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from shipyard.errors import UserInputError

AUTH_MODE_VAR = "RAY_AUTH_MODE"
TOKEN_VAR = "RAY_AUTH_TOKEN"
TOKEN_PATH_VAR = "RAY_AUTH_TOKEN_PATH"


def default_token_path() -> Path:
    return Path.home() / ".ray" / "auth_token"


@dataclass(frozen=True)
class TokenSource:
    """Where the token comes from, described without revealing it."""

    kind: str  # "env", "file"
    where: str  # the variable name or the file path

    def describe(self) -> str:
        return f"${self.where}" if self.kind == "env" else self.where


def find_token() -> tuple[str, TokenSource] | None:
    """The token and its source in Ray's lookup order, or None when there is none."""
    value = os.environ.get(TOKEN_VAR, "").strip()
    if value:
        return value, TokenSource("env", TOKEN_VAR)
    path_value = os.environ.get(TOKEN_PATH_VAR, "").strip()
    if path_value:
        path = Path(path_value).expanduser()
        text = path.read_text(encoding="utf-8").strip() if path.is_file() else ""
        if not text:
            # Ray itself refuses to start in this case; say so before it does, naming the fix.
            raise UserInputError(
                f"{TOKEN_PATH_VAR} points to {path}, which is missing or empty;"
                f" write the token there or unset {TOKEN_PATH_VAR}"
            )
        return text, TokenSource("file", str(path))
    path = default_token_path()
    if path.is_file():
        text = path.read_text(encoding="utf-8").strip()
        if text:
            return text, TokenSource("file", str(path))
    return None


def ensure_token() -> TokenSource:
    """Make sure a token exists before starting a cluster, creating ~/.ray/auth_token like Ray.

    `ray start --head` with token mode on and no token refuses to start; a fresh laptop should
    just work, so generate one (256 bits, file mode 0600) the way `ray.init()` would.
    """
    found = find_token()
    if found:
        return found[1]
    path = default_token_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(secrets.token_hex(32))
    return TokenSource("file", str(path))


def auth_headers() -> dict[str, str]:
    """`Authorization` header for Ray's HTTP APIs (empty when no token exists: auth disabled)."""
    found = find_token()
    return {"Authorization": f"Bearer {found[0]}"} if found else {}


def client_env(base: dict[str, str] | None = None) -> dict[str, str]:
    """Environment for a child Ray client or node: token mode on (unless explicitly disabled)."""
    env = dict(os.environ if base is None else base)
    env.setdefault(AUTH_MODE_VAR, "token")
    return env
