"""Asymmetric token keys: a PEM public key, or an identity provider's JWKS with rotation.

Every HTTP test goes through the whole stack (``GET /api/mobile/support-requests``
on a fresh app). The JWKS is served on loopback by a small ``http.server`` in a
thread, whose keys the tests change mid-run to rotate them.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

from support_requests.handlers.app import create_app
from support_requests.handlers.settings import ConfigurationError, KeyMode, Settings
from tests.helpers import MOBILE, SECRET, bearer, mint
from tests.servers import free_port

PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey


# -- keys and tokens --------------------------------------------------------------


@pytest.fixture(scope="module")
def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
def other_rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
def ec_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def public_pem(key: PrivateKey) -> bytes:
    return key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def private_pem(key: PrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def claims(**extra: Any) -> dict[str, Any]:
    payload = {"sub": f"customer-{uuid.uuid4().hex[:12]}", "exp": int(time.time()) + 3600}
    payload.update(extra)
    return payload


def sign(key: PrivateKey, kid: str | None = None, **extra: Any) -> str:
    """A token signed with ``key``: RS256 for RSA, ES256 for EC P-256."""
    algorithm = "RS256" if isinstance(key, rsa.RSAPrivateKey) else "ES256"
    headers = {"kid": kid} if kid is not None else None
    return jwt.encode(claims(**extra), key, algorithm=algorithm, headers=headers)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unsigned_token(header: dict[str, Any], payload: dict[str, Any], key: bytes) -> str:
    """A JWT with the given header, HMAC-SHA256-signed with ``key`` (PyJWT refuses to forge)."""
    signing_input = f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(payload).encode())}"
    signature = hmac.new(key, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{_b64(signature)}"


def jwk(key: PrivateKey, kid: str) -> dict[str, Any]:
    """The public JWK of ``key``, as an identity provider publishes it."""
    if isinstance(key, rsa.RSAPrivateKey):
        data = RSAAlgorithm.to_jwk(key.public_key(), as_dict=True)
        data["alg"] = "RS256"
    else:
        data = ECAlgorithm.to_jwk(key.public_key(), as_dict=True)
        data["alg"] = "ES256"
    return {**data, "kid": kid, "use": "sig"}


# -- the app ----------------------------------------------------------------------


def key_settings(tmp_path: Path, **keys: Any) -> Settings:
    return Settings(database_url=f"sqlite:///{tmp_path / 'support.db'}", data_dir=tmp_path, **keys)


@contextmanager
def running(settings: Settings) -> Iterator[Any]:
    app = create_app(settings)
    with app.test_client() as test_client:
        yield test_client


def list_requests(client: Any, token: str) -> Any:
    return client.get(MOBILE, headers=bearer(token))


def assert_unauthenticated(response: Any) -> None:
    assert response.status_code == 401, response.text
    assert response.headers["WWW-Authenticate"].startswith("Bearer")
    assert response.headers["Content-Type"] == "application/problem+json"
    assert response.json()["code"] == "unauthenticated"


def assert_keys_unavailable(response: Any) -> None:
    assert response.status_code == 503, response.text
    assert response.headers["Content-Type"] == "application/problem+json"
    body = response.json()
    assert body["code"] == "service_unavailable"
    assert body["status"] == 503
    assert body["detail"] == body["message"]
    assert int(response.headers["Retry-After"]) >= 1


# -- a JWKS endpoint on loopback --------------------------------------------------


class JwksServer:
    """Serves ``keys`` as a JWKS; counts requests; can answer slowly or with an error."""

    def __init__(self) -> None:
        self.keys: list[dict[str, Any]] = []
        self.hits = 0
        self.delay = 0.0
        self.status = 200
        self.body: bytes | None = None
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                server.hits += 1
                if server.delay:
                    time.sleep(server.delay)
                body = server.body or json.dumps({"keys": server.keys}).encode()
                self.send_response(server.status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        class Server(ThreadingHTTPServer):
            daemon_threads = True

            def handle_error(self, request: Any, client_address: Any) -> None:
                pass  # a client that gave up (timeout test) is not a failure here

        self._httpd = Server(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._httpd.server_address[1]}/.well-known/jwks.json"
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()
        self._running = True

    def stop(self) -> None:
        if self._running:
            self._running = False
            self._httpd.shutdown()
            self._httpd.server_close()
            self._thread.join()


@pytest.fixture
def idp() -> Iterator[JwksServer]:
    server = JwksServer()
    yield server
    server.stop()


def closed_port_url() -> str:
    return f"http://127.0.0.1:{free_port()}/.well-known/jwks.json"


def jwks_settings(tmp_path: Path, url: str, **timing: Any) -> Settings:
    return key_settings(tmp_path, jwks_url=url, **timing)


# -- PEM public key ---------------------------------------------------------------


def test_rsa_public_key_accepts_rs256_tokens(tmp_path: Path, rsa_key: rsa.RSAPrivateKey) -> None:
    settings = key_settings(tmp_path, jwt_public_key=public_pem(rsa_key))
    assert settings.key_mode is KeyMode.PUBLIC_KEY
    assert settings.jwt_algorithms == ("RS256",)
    with running(settings) as client:
        response = list_requests(client, sign(rsa_key))
    assert response.status_code == 200, response.text
    assert response.json()["data"] == []


def test_ec_p256_public_key_accepts_es256_tokens(
    tmp_path: Path, ec_key: ec.EllipticCurvePrivateKey
) -> None:
    settings = key_settings(tmp_path, jwt_public_key=public_pem(ec_key))
    assert settings.jwt_algorithms == ("ES256",)
    with running(settings) as client:
        response = list_requests(client, sign(ec_key))
    assert response.status_code == 200, response.text


def test_public_key_in_a_certificate_is_accepted(
    tmp_path: Path, rsa_key: rsa.RSAPrivateKey
) -> None:
    from datetime import UTC, datetime, timedelta

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.x509.oid import NameOID

    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "idp.example")])
    now = datetime.now(UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(rsa_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + timedelta(days=1))
        .sign(rsa_key, hashes.SHA256())
    )
    pem = certificate.public_bytes(serialization.Encoding.PEM)
    with running(key_settings(tmp_path, jwt_public_key=pem)) as client:
        assert list_requests(client, sign(rsa_key)).status_code == 200


def test_public_key_mode_refuses_hs256_tokens(tmp_path: Path, rsa_key: rsa.RSAPrivateKey) -> None:
    with running(key_settings(tmp_path, jwt_public_key=public_pem(rsa_key))) as client:
        response = list_requests(client, mint(secret=SECRET))
    assert_unauthenticated(response)


def test_public_key_mode_refuses_alg_none(tmp_path: Path, rsa_key: rsa.RSAPrivateKey) -> None:
    header = _b64(json.dumps({"alg": "none", "typ": "JWT"}).encode())
    token = f"{header}.{_b64(json.dumps(claims()).encode())}."
    with running(key_settings(tmp_path, jwt_public_key=public_pem(rsa_key))) as client:
        response = list_requests(client, token)
    assert_unauthenticated(response)


def test_hs256_token_signed_with_the_public_key_is_refused(
    tmp_path: Path, rsa_key: rsa.RSAPrivateKey
) -> None:
    pem = public_pem(rsa_key)
    forged = unsigned_token({"alg": "HS256", "typ": "JWT"}, claims(), pem)
    with running(key_settings(tmp_path, jwt_public_key=pem)) as client:
        response = list_requests(client, forged)
    assert_unauthenticated(response)


def test_rsa_public_key_refuses_es256_tokens(
    tmp_path: Path, rsa_key: rsa.RSAPrivateKey, ec_key: ec.EllipticCurvePrivateKey
) -> None:
    with running(key_settings(tmp_path, jwt_public_key=public_pem(rsa_key))) as client:
        response = list_requests(client, sign(ec_key))
    assert_unauthenticated(response)


def test_public_key_mode_refuses_tokens_signed_by_another_key(
    tmp_path: Path, rsa_key: rsa.RSAPrivateKey, other_rsa_key: rsa.RSAPrivateKey
) -> None:
    with running(key_settings(tmp_path, jwt_public_key=public_pem(rsa_key))) as client:
        response = list_requests(client, sign(other_rsa_key))
    assert_unauthenticated(response)
    assert response.json()["detail"] == "The bearer token's signature is not valid."


def test_public_key_mode_keeps_the_claim_rules(tmp_path: Path, rsa_key: rsa.RSAPrivateKey) -> None:
    settings = key_settings(
        tmp_path,
        jwt_public_key=public_pem(rsa_key),
        jwt_issuer="https://idp.example",
        jwt_audience="support-requests",
    )
    good = {"iss": "https://idp.example", "aud": "support-requests"}
    with running(settings) as client:
        assert list_requests(client, sign(rsa_key, **good)).status_code == 200
        assert_unauthenticated(list_requests(client, sign(rsa_key, **{**good, "iss": "x"})))
        assert_unauthenticated(list_requests(client, sign(rsa_key, **{**good, "aud": "x"})))
        assert_unauthenticated(list_requests(client, sign(rsa_key, **good, exp=1)))
        no_sub = jwt.encode({**good, "exp": int(time.time()) + 60}, rsa_key, algorithm="RS256")
        assert_unauthenticated(list_requests(client, no_sub))
        admin = sign(rsa_key, **good, sub=str(uuid.uuid4()), role="admin")
        assert list_requests(client, admin).status_code == 403


# -- JWKS -------------------------------------------------------------------------


def test_jwks_mode_accepts_rs256_and_es256_tokens_by_kid(
    tmp_path: Path,
    idp: JwksServer,
    rsa_key: rsa.RSAPrivateKey,
    ec_key: ec.EllipticCurvePrivateKey,
) -> None:
    idp.keys = [jwk(rsa_key, "rsa-1"), jwk(ec_key, "ec-1")]
    settings = jwks_settings(tmp_path, idp.url)
    assert settings.key_mode is KeyMode.JWKS
    with running(settings) as client:
        assert list_requests(client, sign(rsa_key, "rsa-1")).status_code == 200
        assert list_requests(client, sign(ec_key, "ec-1")).status_code == 200
        assert list_requests(client, sign(rsa_key, "rsa-1")).status_code == 200
    assert idp.hits == 1


def test_jwks_mode_refuses_a_token_under_another_keys_kid(
    tmp_path: Path,
    idp: JwksServer,
    rsa_key: rsa.RSAPrivateKey,
    other_rsa_key: rsa.RSAPrivateKey,
    ec_key: ec.EllipticCurvePrivateKey,
) -> None:
    idp.keys = [jwk(rsa_key, "rsa-1"), jwk(ec_key, "ec-1")]
    with running(jwks_settings(tmp_path, idp.url)) as client:
        assert_unauthenticated(list_requests(client, sign(other_rsa_key, "rsa-1")))
        # an ES256 token naming the RSA key's kid: the key's algorithm wins, not the token's
        assert_unauthenticated(list_requests(client, sign(ec_key, "rsa-1")))


def test_jwks_mode_refuses_tokens_without_kid_or_with_hs256_without_fetching(
    tmp_path: Path, idp: JwksServer, rsa_key: rsa.RSAPrivateKey
) -> None:
    idp.keys = [jwk(rsa_key, "rsa-1")]
    with running(jwks_settings(tmp_path, idp.url)) as client:
        assert_unauthenticated(list_requests(client, sign(rsa_key)))
        assert_unauthenticated(list_requests(client, mint(secret=SECRET)))
        forged = unsigned_token({"alg": "HS256", "kid": "rsa-1"}, claims(), public_pem(rsa_key))
        assert_unauthenticated(list_requests(client, forged))
        assert_unauthenticated(list_requests(client, "not-a-jwt"))
    assert idp.hits == 0


def test_jwks_hs_key_is_never_used(
    tmp_path: Path, idp: JwksServer, rsa_key: rsa.RSAPrivateKey
) -> None:
    shared = b"k" * 32
    oct_key = {"kty": "oct", "kid": "hs-1", "k": _b64(shared), "alg": "HS256", "use": "sig"}
    idp.keys = [oct_key, jwk(rsa_key, "rsa-1")]
    hs_token = jwt.encode(claims(), shared, algorithm="HS256", headers={"kid": "hs-1"})
    rs_token_naming_hs_kid = sign(rsa_key, "hs-1")
    with running(jwks_settings(tmp_path, idp.url)) as client:
        assert_unauthenticated(list_requests(client, hs_token))
        assert_unauthenticated(list_requests(client, rs_token_naming_hs_kid))
        assert list_requests(client, sign(rsa_key, "rsa-1")).status_code == 200


def test_rotated_key_is_accepted_without_restart_and_removed_key_is_refused(
    tmp_path: Path,
    idp: JwksServer,
    rsa_key: rsa.RSAPrivateKey,
    other_rsa_key: rsa.RSAPrivateKey,
) -> None:
    idp.keys = [jwk(rsa_key, "2024-01")]
    settings = jwks_settings(tmp_path, idp.url, jwks_refetch_seconds=0)
    with running(settings) as client:
        old_token = sign(rsa_key, "2024-01")
        assert list_requests(client, old_token).status_code == 200

        idp.keys = [jwk(other_rsa_key, "2024-02")]  # the IdP rotates
        assert list_requests(client, sign(other_rsa_key, "2024-02")).status_code == 200
        response = list_requests(client, old_token)
        assert_unauthenticated(response)
        assert response.json()["detail"] == "The bearer token's signing key ('kid') is not known."
        assert list_requests(client, sign(other_rsa_key, "2024-02")).status_code == 200


def test_unknown_kid_refetches_only_after_the_refetch_interval(
    tmp_path: Path,
    idp: JwksServer,
    rsa_key: rsa.RSAPrivateKey,
    other_rsa_key: rsa.RSAPrivateKey,
) -> None:
    idp.keys = [jwk(rsa_key, "a")]
    settings = jwks_settings(tmp_path, idp.url, jwks_refetch_seconds=0.5)
    with running(settings) as client:
        assert list_requests(client, sign(rsa_key, "a")).status_code == 200
        idp.keys = [jwk(rsa_key, "a"), jwk(other_rsa_key, "b")]
        new_token = sign(other_rsa_key, "b")
        assert_unauthenticated(list_requests(client, new_token))
        assert idp.hits == 1
        time.sleep(0.6)
        assert list_requests(client, new_token).status_code == 200
        assert idp.hits == 2


def test_a_flood_of_unknown_kids_does_not_hammer_the_idp(
    tmp_path: Path, idp: JwksServer, rsa_key: rsa.RSAPrivateKey
) -> None:
    idp.keys = [jwk(rsa_key, "real")]
    with running(jwks_settings(tmp_path, idp.url)) as client:
        assert list_requests(client, sign(rsa_key, "real")).status_code == 200
        for _ in range(50):
            assert_unauthenticated(list_requests(client, sign(rsa_key, uuid.uuid4().hex)))
        assert list_requests(client, sign(rsa_key, "real")).status_code == 200
    assert idp.hits == 1


def test_concurrent_requests_share_one_jwks_fetch(
    tmp_path: Path, idp: JwksServer, rsa_key: rsa.RSAPrivateKey
) -> None:
    idp.keys = [jwk(rsa_key, "a")]
    idp.delay = 0.3
    with running(jwks_settings(tmp_path, idp.url)) as client, ThreadPoolExecutor(8) as pool:
        tokens = [sign(rsa_key, "a") for _ in range(8)]
        statuses = list(pool.map(lambda t: list_requests(client, t).status_code, tokens))
    assert statuses == [200] * 8
    assert idp.hits == 1


def test_a_jwks_fetch_does_not_block_requests_with_cached_keys(
    tmp_path: Path,
    idp: JwksServer,
    rsa_key: rsa.RSAPrivateKey,
    other_rsa_key: rsa.RSAPrivateKey,
) -> None:
    idp.keys = [jwk(rsa_key, "cached")]
    settings = jwks_settings(tmp_path, idp.url, jwks_refetch_seconds=0)
    with running(settings) as client, ThreadPoolExecutor(1) as pool:
        cached_token = sign(rsa_key, "cached")
        assert list_requests(client, cached_token).status_code == 200
        idp.keys = [jwk(rsa_key, "cached"), jwk(other_rsa_key, "new")]
        idp.delay = 1.5
        slow = pool.submit(list_requests, client, sign(other_rsa_key, "new"))
        while idp.hits < 2:  # the slow fetch has reached the IdP
            time.sleep(0.01)
        started = time.monotonic()
        assert list_requests(client, cached_token).status_code == 200
        assert time.monotonic() - started < 0.75
        assert not slow.done()
        assert slow.result(timeout=5).status_code == 200


def test_unreachable_jwks_is_503_with_retry_after(
    tmp_path: Path, rsa_key: rsa.RSAPrivateKey
) -> None:
    with running(jwks_settings(tmp_path, closed_port_url())) as client:
        first = list_requests(client, sign(rsa_key, "a"))
        again = list_requests(client, sign(rsa_key, "a"))
    assert_keys_unavailable(first)
    assert_keys_unavailable(again)
    assert first.json()["detail"] == (
        "The identity provider's signing keys cannot be fetched; try again shortly."
    )


def test_stopped_jwks_is_503_once_the_cached_keys_expire(
    tmp_path: Path, idp: JwksServer, rsa_key: rsa.RSAPrivateKey
) -> None:
    idp.keys = [jwk(rsa_key, "a")]
    settings = jwks_settings(tmp_path, idp.url, jwks_cache_seconds=1.0, jwks_refetch_seconds=0.1)
    with running(settings) as client:
        token = sign(rsa_key, "a")
        assert list_requests(client, token).status_code == 200
        idp.stop()
        assert list_requests(client, token).status_code == 200  # still cached
        time.sleep(1.1)
        assert_keys_unavailable(list_requests(client, token))
        assert_keys_unavailable(list_requests(client, sign(rsa_key, "other")))


@pytest.mark.parametrize(
    ("status", "body"),
    [
        (500, b'{"error": "internal"}'),
        (200, b"<html>not json</html>"),
        (200, b'["not", "an", "object"]'),
        (200, b'{"keys": []}'),
        (200, b'{"keys": [{"kty": "oct", "kid": "hs", "k": "c2VjcmV0c2VjcmV0"}]}'),
    ],
    ids=["http-500", "not-json", "not-an-object", "no-keys", "only-an-hs-key"],
)
def test_a_broken_jwks_answer_is_503_and_retried_only_after_the_interval(
    tmp_path: Path, idp: JwksServer, rsa_key: rsa.RSAPrivateKey, status: int, body: bytes
) -> None:
    idp.status, idp.body = status, body
    settings = jwks_settings(tmp_path, idp.url, jwks_refetch_seconds=30)
    with running(settings) as client:
        first = list_requests(client, sign(rsa_key, "a"))
        assert_keys_unavailable(first)
        assert 1 <= int(first.headers["Retry-After"]) <= 30
        assert_keys_unavailable(list_requests(client, sign(rsa_key, "a")))
    assert idp.hits == 1


def test_a_jwks_that_does_not_answer_in_time_is_503(
    tmp_path: Path, idp: JwksServer, rsa_key: rsa.RSAPrivateKey
) -> None:
    idp.keys = [jwk(rsa_key, "a")]
    idp.delay = 3.0
    settings = jwks_settings(tmp_path, idp.url, jwks_timeout=0.3)
    with running(settings) as client:
        started = time.monotonic()
        response = list_requests(client, sign(rsa_key, "a"))
        elapsed = time.monotonic() - started
    assert_keys_unavailable(response)
    assert elapsed < 2.0


# -- configuration ----------------------------------------------------------------


def test_two_key_modes_are_refused_at_start(tmp_path: Path, rsa_key: rsa.RSAPrivateKey) -> None:
    pem = public_pem(rsa_key)
    url = "https://idp.example/.well-known/jwks.json"
    combinations: list[dict[str, Any]] = [
        {"jwt_secret": SECRET.encode(), "jwt_public_key": pem},
        {"jwt_secret": SECRET.encode(), "jwks_url": url},
        {"jwt_public_key": pem, "jwks_url": url},
    ]
    for keys in combinations:
        with pytest.raises(ConfigurationError, match="are both set; configure exactly one"):
            key_settings(tmp_path, **keys)


def test_two_key_variables_are_refused_at_start_without_creating_a_dev_secret(
    tmp_path: Path, rsa_key: rsa.RSAPrivateKey
) -> None:
    pem_path = tmp_path / "public.pem"
    pem_path.write_bytes(public_pem(rsa_key))
    env = {
        "SUPPORT_DATA_DIR": str(tmp_path / "data"),
        "SUPPORT_JWT_SECRET": SECRET,
        "SUPPORT_JWT_PUBLIC_KEY": str(pem_path),
    }
    with pytest.raises(ConfigurationError) as raised:
        Settings.from_env(env)
    assert "SUPPORT_JWT_SECRET and SUPPORT_JWT_PUBLIC_KEY are both set" in str(raised.value)
    assert not (tmp_path / "data").exists()


def test_a_short_secret_is_refused_at_start(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="at least 32 bytes"):
        key_settings(tmp_path, jwt_secret=b"s" * 31)
    with pytest.raises(ConfigurationError, match="at least 32 bytes"):
        Settings.from_env({"SUPPORT_DATA_DIR": str(tmp_path), "SUPPORT_JWT_SECRET": "short"})


def test_settings_without_any_key_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="No token key is configured"):
        key_settings(tmp_path)


def test_dev_secret_is_created_only_when_no_key_is_configured(
    tmp_path: Path, rsa_key: rsa.RSAPrivateKey
) -> None:
    pem_path = tmp_path / "public.pem"
    pem_path.write_bytes(public_pem(rsa_key))
    data_dir = tmp_path / "data"
    base = {"SUPPORT_DATA_DIR": str(data_dir)}
    dev_secret = data_dir / "dev-jwt-secret"

    from_pem = Settings.from_env({**base, "SUPPORT_JWT_PUBLIC_KEY": str(pem_path)})
    assert from_pem.key_mode is KeyMode.PUBLIC_KEY
    assert from_pem.jwt_secret is None
    assert not dev_secret.exists()

    from_jwks = Settings.from_env({**base, "SUPPORT_JWKS_URL": "https://idp.example/jwks"})
    assert from_jwks.key_mode is KeyMode.JWKS
    assert not dev_secret.exists()

    from_secret = Settings.from_env({**base, "SUPPORT_JWT_SECRET": SECRET})
    assert from_secret.key_mode is KeyMode.SECRET
    assert not dev_secret.exists()

    zero_config = Settings.from_env(base)
    assert zero_config.key_mode is KeyMode.DEV_SECRET
    assert dev_secret.exists()
    assert zero_config.jwt_secret == dev_secret.read_text().strip().encode()


def test_active_key_mode_is_described_for_the_operator(
    tmp_path: Path, ec_key: ec.EllipticCurvePrivateKey
) -> None:
    pem_path = tmp_path / "public.pem"
    pem_path.write_bytes(public_pem(ec_key))
    data = {"SUPPORT_DATA_DIR": str(tmp_path)}
    pem = Settings.from_env({**data, "SUPPORT_JWT_PUBLIC_KEY": str(pem_path)})
    assert pem.key_description == "ES256 with the public key from SUPPORT_JWT_PUBLIC_KEY"
    jwks = Settings.from_env({**data, "SUPPORT_JWKS_URL": "https://idp.example/jwks"})
    assert jwks.key_description == (
        "RS256/ES256 with the keys published at https://idp.example/jwks, by kid"
    )
    secret = Settings.from_env({**data, "SUPPORT_JWT_SECRET": SECRET})
    assert secret.key_description == "HS256 with the secret from SUPPORT_JWT_SECRET"
    assert SECRET not in secret.key_description
    dev = Settings.from_env(data)
    assert dev.key_description.startswith(f"HS256 with the development secret in {tmp_path}")


@pytest.mark.parametrize(
    ("make_pem", "message"),
    [
        (
            lambda: private_pem(rsa.generate_private_key(public_exponent=65537, key_size=2048)),
            "holds a private key",
        ),
        (
            lambda: public_pem(rsa.generate_private_key(public_exponent=65537, key_size=1024)),
            "1024-bit RSA key; at least 2048",
        ),
        (
            lambda: public_pem(ec.generate_private_key(ec.SECP384R1())),
            "secp384r1; only P-256",
        ),
        (
            lambda: b"-----BEGIN PUBLIC KEY-----\nnot base64\n-----END PUBLIC KEY-----\n",
            "not a PEM",
        ),
        (lambda: b"", "not a PEM"),
    ],
    ids=["private-key", "short-rsa", "p384", "garbage", "empty"],
)
def test_an_unusable_public_key_is_refused_at_start(
    tmp_path: Path, make_pem: Any, message: str
) -> None:
    pem_path = tmp_path / "key.pem"
    pem_path.write_bytes(make_pem())
    with pytest.raises(ConfigurationError, match=message):
        Settings.from_env(
            {"SUPPORT_DATA_DIR": str(tmp_path), "SUPPORT_JWT_PUBLIC_KEY": str(pem_path)}
        )


def test_a_missing_public_key_file_is_refused_at_start(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere.pem"
    with pytest.raises(ConfigurationError, match=f"cannot read {missing}"):
        Settings.from_env(
            {"SUPPORT_DATA_DIR": str(tmp_path), "SUPPORT_JWT_PUBLIC_KEY": str(missing)}
        )


@pytest.mark.parametrize(
    "url", ["file:///etc/passwd", "ftp://idp.example/jwks", "https://", "idp.example/jwks"]
)
def test_a_jwks_url_that_is_not_http_is_refused_at_start(tmp_path: Path, url: str) -> None:
    with pytest.raises(ConfigurationError, match="must be an http"):
        key_settings(tmp_path, jwks_url=url)


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"SUPPORT_JWKS_TIMEOUT": "soon"}, "SUPPORT_JWKS_TIMEOUT must be a number"),
        ({"SUPPORT_JWKS_TIMEOUT": "0"}, "SUPPORT_JWKS_TIMEOUT must be a number"),
        ({"SUPPORT_JWKS_CACHE_SECONDS": "-1"}, "SUPPORT_JWKS_CACHE_SECONDS must be a number"),
        ({"SUPPORT_JWKS_REFETCH_SECONDS": "nan"}, "SUPPORT_JWKS_REFETCH_SECONDS must be a"),
        (
            {"SUPPORT_JWKS_CACHE_SECONDS": "60", "SUPPORT_JWKS_REFETCH_SECONDS": "120"},
            "must not exceed SUPPORT_JWKS_CACHE_SECONDS",
        ),
    ],
)
def test_jwks_timings_are_checked_at_start(
    tmp_path: Path, env: dict[str, str], message: str
) -> None:
    base = {"SUPPORT_DATA_DIR": str(tmp_path), "SUPPORT_JWKS_URL": "https://idp.example/jwks"}
    with pytest.raises(ConfigurationError, match=message):
        Settings.from_env({**base, **env})


def test_jwks_timings_are_read_from_the_environment(tmp_path: Path) -> None:
    settings = Settings.from_env(
        {
            "SUPPORT_DATA_DIR": str(tmp_path),
            "SUPPORT_JWKS_URL": "https://idp.example/jwks",
            "SUPPORT_JWKS_TIMEOUT": "1.5",
            "SUPPORT_JWKS_CACHE_SECONDS": "600",
            "SUPPORT_JWKS_REFETCH_SECONDS": "0",
        }
    )
    assert (settings.jwks_timeout, settings.jwks_cache_seconds) == (1.5, 600.0)
    assert settings.jwks_refetch_seconds == 0.0
