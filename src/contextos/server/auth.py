"""Who is calling: an API key becomes a :class:`Principal` bound to one tenant.

The tenant of every memory operation comes from here and only from here, never
from a request body or query string, so one tenant's key cannot name another
tenant. The admin key (configured on the server, compared in constant time)
may manage keys but is not a tenant: it cannot read or write memories.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

from ..errors import AuthError, RateLimited
from .keys import ApiKey, KeyStore, hash_secret, secrets_match
from .ratelimit import RateLimit, TokenBucketLimiter

#: Failed authentications a client may make at once, then per second.
DEFAULT_AUTH_FAILURES = RateLimit(rate=1.0, burst=20)


class Unauthenticated(AuthError):
    """No key, or a key that is unknown, malformed or revoked (HTTP 401).

    ``revoked``: the key's secret matched but the key is revoked. Its holder proved
    possession, so :meth:`Authenticator.admit` does not charge it to the address's
    failed-authentication throttle (which is for guesses)."""

    def __init__(self, message: str, *, revoked: bool = False) -> None:
        super().__init__(message)
        self.revoked = revoked


def revoked_key(key: ApiKey) -> Unauthenticated:
    """The 401 of a revoked key presented with its right secret: it names the key, which
    only its holder can learn this way (a wrong secret is answered as an unknown id).
    An offboarded tenant's key says so: there is no key that replaced it, and the
    message used to send its client looking for one (a review)."""
    if key.offboarded:
        why = "its tenant was deleted from this server; no key replaces it"
    else:
        why = "switch this client to another key of its tenant (the one that replaced it)"
    return Unauthenticated(f"API key {key.id} was revoked: {why}", revoked=True)


class Forbidden(AuthError):
    """A valid key used for something it may not do (HTTP 403)."""


@dataclass(frozen=True)
class Principal:
    """The caller of one request: a tenant key, or the admin."""

    key_id: str
    tenant: str | None
    is_admin: bool = False


ADMIN = Principal(key_id="admin", tenant=None, is_admin=True)


def bearer_secret(headers: Mapping[str, str]) -> str | None:
    """The key from ``Authorization: Bearer ...`` or ``X-API-Key``, if any."""
    return bearer_credential(headers.get("authorization", "")) or (
        headers.get("x-api-key", "").strip() or None
    )


#: The 401 of an ``Authorization`` header that is not ``Bearer <key>`` on a request
#: with no key in ``X-API-Key`` either.
NOT_BEARER = "Authorization must be 'Bearer <key>' (or send the key alone in X-API-Key)"


def missing_key(headers: Mapping[str, str]) -> Unauthenticated:
    """The 401 of a request that sent no API key: "missing", unless it sent an
    ``Authorization`` header of another form (``Authorization: <key>`` without "Bearer",
    a very common first curl mistake, was told "missing API key", a review)."""
    if headers.get("authorization", "").strip():
        return Unauthenticated(NOT_BEARER)
    return Unauthenticated("missing API key: send 'Authorization: Bearer <key>'")


def bearer_credential(authorization: str) -> str | None:
    """The key an ``Authorization`` value carries: its credential when the scheme is
    ``Bearer``, else None. Another scheme is no API key (HTTP Basic added by a proxy in
    front, say): the key is then read from ``X-API-Key``, and the gate's count of the
    keys a request sent reads the header by this same rule (a review)."""
    scheme, _, value = authorization.partition(" ")
    return (value.strip() or None) if scheme.lower() == "bearer" else None


def validate_admin_key(admin_key: str | None) -> None:
    """A guessable admin key would undo the tenancy model: require some length."""
    if admin_key is not None and len(admin_key) < 16:
        raise ValueError("the admin key must be at least 16 characters")


class Authenticator:
    """Turns a request's key into a Principal and charges its rate-limit bucket."""

    def __init__(
        self,
        keys: KeyStore,
        *,
        admin_key: str | None,
        limiter: TokenBucketLimiter,
        failures: TokenBucketLimiter | None = None,
    ) -> None:
        validate_admin_key(admin_key)
        self.keys = keys
        self._admin_hash = hash_secret(admin_key) if admin_key else None
        self.limiter = limiter
        self.failures = TokenBucketLimiter(DEFAULT_AUTH_FAILURES) if failures is None else failures

    def admit(self, headers: Mapping[str, str], client: str, *, keys_sent: int = 1) -> Principal:
        """The caller of a request from address ``client``, charged to its key's bucket.

        Raises RateLimited while ``client`` has used up its failed attempts (before
        the key is checked), Unauthenticated for a missing or wrong key, or for more
        than one key header (``keys_sent``; each uses one attempt), Unauthenticated
        (``revoked``, no attempt used) for a revoked key with its right secret, and
        RateLimited when the key is over its own rate."""
        wait = self.failures.wait(client)
        if wait > 0:
            raise RateLimited("too many failed authentications from this client", retry_after=wait)
        try:
            if keys_sent > 1:
                raise Unauthenticated("send one API key: the request has more than one key header")
            principal = self._identify_request(headers)
        except Unauthenticated as exc:
            if not exc.revoked:  # a guess; a revoked key's holder is not guessing
                self.failures.acquire(client)
            raise
        return self._charge(principal)

    def admit_cached(self, headers: Mapping[str, str], client: str) -> Principal | None:
        """:meth:`admit` for a request whose key needs no table read (the admin key, or
        a tenant key in the KeyStore's cache), else None: then call :meth:`admit` on a
        thread. Never blocks, so the AuthGate calls it on the event loop; a client over
        its failed attempts, or without a key, gets None and its error from admit. A
        revoked key found in the cache raises admit's Unauthenticated (``revoked``)."""
        secret = bearer_secret(headers)
        if not secret or self.failures.wait(client) > 0:
            return None
        if self._admin_hash is not None and secrets_match(secret, self._admin_hash):
            return self._charge(ADMIN)
        key = self.keys.checked(secret)
        if key is None:
            return None
        if not key.active:
            raise revoked_key(key)
        return self._charge(Principal(key_id=key.id, tenant=key.tenant))

    def readmit(self, headers: Mapping[str, str], principal: Principal) -> None:
        """Check again the key of a request :meth:`admit` let in as ``principal``: the
        gate calls it (on a thread) once the request's body is in, when that took longer
        than the key cache's lifetime. Raises what a fresh request with these headers
        would get: Unauthenticated (``revoked``) for a key revoked since (or its
        tenant's keys erased: ``forget --whole-tenant``), Unauthenticated for a key that
        names nobody now. Charges neither the rate nor the failed attempts: the request
        was charged when it was admitted. The admin key needs nothing.

        Why: the key was checked from the headers alone, and a client may take an hour
        to send a 1 MB body (the body-rate rule lets it): a key revoked meanwhile was
        served, a write landed 300 s after the revocation, and one landed after
        ``forget --whole-tenant`` had made its last pass (a review)."""
        if principal.is_admin:
            return
        secret = bearer_secret(headers)
        key = (self.keys.checked(secret) or self.keys.check(secret)) if secret else None
        if key is None or key.id != principal.key_id:
            raise Unauthenticated("invalid API key")
        if not key.active:
            raise revoked_key(key)

    def _identify_request(self, headers: Mapping[str, str]) -> Principal:
        """:meth:`identify` of the key a request's headers carry (:func:`missing_key`
        when they carry none)."""
        secret = bearer_secret(headers)
        if not secret:
            raise missing_key(headers)
        return self.identify(secret)

    def identify(self, secret: str | None) -> Principal:
        """Principal for ``secret``; Unauthenticated when it names nobody or a revoked
        key (``revoked`` set only when the secret matched: an unknown id and a revoked
        id with a wrong secret get the same answer)."""
        if not secret:
            raise Unauthenticated("missing API key: send 'Authorization: Bearer <key>'")
        if self._admin_hash is not None and secrets_match(secret, self._admin_hash):
            return ADMIN
        key = self.keys.check(secret)
        if key is None:
            raise Unauthenticated("invalid API key")
        if not key.active:
            raise revoked_key(key)
        return Principal(key_id=key.id, tenant=key.tenant)

    def tenant_of(self, headers: Mapping[str, str]) -> str:
        """The tenant of a request's key, checked and charged here: for routes mounted
        outside :class:`~contextos.server.gate.AuthGate` (behind it, use
        ``tenant_for`` on the gate's principal, or the key pays twice)."""
        return self.tenant_for(self._charge(self._identify_request(headers)))

    @staticmethod
    def tenant_for(principal: Principal) -> str:
        """The tenant a request acts for; the admin key is refused here."""
        if principal.is_admin or principal.tenant is None:
            raise Forbidden("the admin key manages keys only; use a tenant key for memories")
        return principal.tenant

    def require_admin(self, caller: Callable[[], Principal]) -> Principal:
        """The admin principal (``caller`` is asked only when key management is
        enabled), or Forbidden for a tenant key."""
        if self._admin_hash is None:
            raise Forbidden(
                "key management over HTTP is disabled: start the server "
                "with --admin-key (or CONTEXTOS_ADMIN_KEY)"
            )
        principal = caller()
        if not principal.is_admin:
            raise Forbidden("this route needs the admin key")
        return principal

    def _charge(self, principal: Principal) -> Principal:
        wait = self.limiter.acquire(principal.key_id)
        if wait > 0:
            raise RateLimited(f"rate limit exceeded for key {principal.key_id}", retry_after=wait)
        return principal
