"""The shared secret between a Locust master and its workers (docs/security.md, docs/cluster.md).

Locust's ZeroMQ channel has no authentication: anyone who reaches the master's port could join
as a worker (and receive every prompt, or inject records), and a worker that joins a rogue master
would do what it says. Both sides therefore name the same secret (the variable of
traffic.worker_token_env, or a token file) and prove to each other that they know it, without
sending it: a challenge-response over HMAC-SHA256 with a fresh nonce from each side.

    worker -> master   auth_hello      {nonce_w}
    master -> worker   auth_challenge  {nonce_m, proof_m = HMAC(token, "master" nonce_w nonce_m)}
    worker -> master   auth_proof      {proof_w = HMAC(token, "worker" nonce_w nonce_m)}

A worker takes no spec from a master that failed its proof; a master counts, sends the spec to,
and merges records from authenticated workers only, and asks any other to quit. Each refusal is
logged (`[loadgen] refused ...`). The channel itself is NOT encrypted: prompts and records cross
the network readable; tunnel it (SSH) across networks you do not trust.

Side effects: none (token_from reads the variable or file it is given).
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from pathlib import Path

# The variable the driver sets to a fresh random token for workers on the lab's own machine
# when traffic.worker_token_env names none (never written to a file).
LOCAL_TOKEN_ENV = "SERVELAB_LOADGEN_TOKEN"
MIN_TOKEN_BYTES = 16
EXIT_AUTH = 5  # a worker that refused its master (or was refused)


class TokenError(ValueError):
    """The token is missing or too short; the message never holds the token."""


def token_from(token_env: str | None = None, token_file: str | None = None) -> bytes:
    """The shared secret from variable `token_env` or file `token_file` (surrounding whitespace
    stripped); TokenError when neither is given, it is unset or shorter than MIN_TOKEN_BYTES."""
    if bool(token_env) == bool(token_file):
        raise TokenError("give the shared token with exactly one of --token-env NAME or --token-file PATH")
    if token_env:
        raw = os.environ.get(token_env, "")
        where = f"environment variable {token_env}"
    else:
        try:
            raw = Path(str(token_file)).read_text()
        except OSError as e:
            raise TokenError(f"cannot read the token file {token_file}: {e.strerror}") from None
        where = f"token file {token_file}"
    token = raw.strip().encode()
    if len(token) < MIN_TOKEN_BYTES:
        raise TokenError(f"{where} must hold a shared token of at least {MIN_TOKEN_BYTES} characters "
                         "(e.g. the output of `openssl rand -hex 32`); it is unset or too short")  # fmt: skip
    return token


def new_token() -> str:
    return secrets.token_hex(32)


def nonce() -> str:
    return secrets.token_hex(16)


def proof(token: bytes, role: str, nonce_w: str, nonce_m: str) -> str:
    """HMAC-SHA256 of the role and both nonces under the token (hex)."""
    return hmac.new(token, f"{role}\n{nonce_w}\n{nonce_m}".encode(), hashlib.sha256).hexdigest()


def check(token: bytes, role: str, nonce_w: str, nonce_m: str, given: object) -> bool:
    return isinstance(given, str) and hmac.compare_digest(proof(token, role, nonce_w, nonce_m), given)
