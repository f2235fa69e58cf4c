"""A local Microsoft Entra ID token issuer for tests: no network, real credential code paths.

:class:`TokenEndpoint` serves the OAuth 2.0 client-credentials endpoint that ``azure-identity``'s
``ClientSecretCredential`` (reached through ``DefaultAzureCredential``'s environment credential)
posts to, over HTTPS with a throw-away certificate, at ``AZURE_AUTHORITY_HOST``. It mints RS256 JWTs
with the key whose public half the emulator is given (``--entra-issuer-key``).
:class:`MintingCredential` is an in-process implementation of azure-core's ``AsyncTokenCredential``
protocol minting the same tokens, for tests that need to control expiry or audience.
"""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import ssl
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import jwt
from aiohttp import web
from azure.core.credentials import AccessToken
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

START_TIMEOUT_S = 10.0
TENANT_ID = "72f988bf-86f1-41af-91ab-2d7cd011db47"
CLIENT_ID = "0f0e0d0c-0b0a-0908-0706-050403020100"
CLIENT_SECRET = "test-client-secret-not-a-real-one"


class Issuer:
    """An RSA key pair: the private half signs tokens, the public half goes to the emulator."""

    def __init__(self, folder: Path) -> None:
        self.private_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.public_key_file = folder / "entra-issuer.pub.pem"
        self.public_key_file.write_bytes(self.private_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
        self.issued: list[str] = []

    def mint(self, audience: str, *, lifetime_s: float = 3600.0, key: rsa.RSAPrivateKey | None = None) -> AccessToken:
        now = int(time.time())
        expires = int(now + lifetime_s)
        claims = {"aud": audience, "iss": f"https://sts.windows.net/{TENANT_ID}/", "iat": now, "nbf": now - 60,
                  "exp": expires, "oid": str(uuid.uuid4()), "tid": TENANT_ID, "appid": CLIENT_ID}
        token = jwt.encode(claims, key or self.private_key, algorithm="RS256")
        self.issued.append(token)
        return AccessToken(token, expires)


def audience_of(scope: str) -> str:
    """The resource a ``.../.default`` scope names, as Entra puts it in ``aud``."""
    return scope.removesuffix("/.default")


class MintingCredential:
    """``AsyncTokenCredential`` minting tokens in process: counts calls, lifetime chosen by the test."""

    def __init__(self, issuer: Issuer, *, lifetime_s: float = 3600.0, audience: str | None = None) -> None:
        self.issuer = issuer
        self.lifetime_s = lifetime_s
        self.audience = audience
        self.scopes: list[str] = []
        self.closed = False

    async def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:
        self.scopes.append(scopes[0])
        return self.issuer.mint(self.audience or audience_of(scopes[0]), lifetime_s=self.lifetime_s)

    async def close(self) -> None:
        self.closed = True

    async def __aenter__(self) -> MintingCredential:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


def self_signed_certificate(folder: Path, name: str) -> tuple[Path, Path]:
    """A throw-away PEM certificate for 127.0.0.1 and its key: ``(certificate file, key file)``."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder().subject_name(subject).issuer_name(subject).public_key(key.public_key())
        .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=2))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
        .sign(key, hashes.SHA256())
    )
    certificate_file, key_file = folder / f"{name}.crt.pem", folder / f"{name}.key.pem"
    certificate_file.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return certificate_file, key_file


def entra_emulator_arguments(issuer: Issuer, folder: Path) -> list[str]:
    """Emulator options for Entra ID: trust the issuer, and serve HTTPS (the SDK sends tokens over TLS only)."""
    certificate, key = self_signed_certificate(folder, "emulator")
    return ["--entra-issuer-key", str(issuer.public_key_file), "--tls-cert", str(certificate), "--tls-key", str(key)]


class TokenEndpoint:
    """``POST /{tenant}/oauth2/v2.0/token`` over HTTPS on a loopback port, served from a thread.

    ``environment`` is what a child process needs for ``DefaultAzureCredential`` to sign in here.
    """

    def __init__(self, issuer: Issuer, folder: Path) -> None:
        self.issuer = issuer
        self.certificate, self._key_file = self_signed_certificate(folder, "token-endpoint")
        self.requests = 0
        self.port = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runner: web.AppRunner | None = None
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)

    @property
    def environment(self) -> dict[str, str]:
        return {
            "AZURE_AUTHORITY_HOST": f"https://127.0.0.1:{self.port}",
            "AZURE_TENANT_ID": TENANT_ID,
            "AZURE_CLIENT_ID": CLIENT_ID,
            "AZURE_CLIENT_SECRET": CLIENT_SECRET,
            "SSL_CERT_FILE": str(self.certificate),  # trust the throw-away certificate, and only it
        }

    async def _token(self, request: web.Request) -> web.Response:
        self.requests += 1
        form = await request.post()
        if request.match_info["tenant"] != TENANT_ID or form.get("client_id") != CLIENT_ID \
                or form.get("client_secret") != CLIENT_SECRET or form.get("grant_type") != "client_credentials":
            return web.json_response({"error": "invalid_client", "error_description": "AADSTS7000215: bad secret"},
                                     status=401)
        token = self.issuer.mint(audience_of(str(form.get("scope", ""))))
        return web.json_response({"token_type": "Bearer", "expires_in": int(token.expires_on - time.time()),
                                  "ext_expires_in": 3600, "access_token": token.token})

    def _serve(self) -> None:
        self._loop = asyncio.new_event_loop()
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(self.certificate, self._key_file)
        app = web.Application()
        app.router.add_post("/{tenant}/oauth2/v2.0/token", self._token)
        self._runner = web.AppRunner(app)
        self._loop.run_until_complete(self._runner.setup())
        site = web.TCPSite(self._runner, "127.0.0.1", 0, ssl_context=context)
        self._loop.run_until_complete(site.start())
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self._ready.set()
        self._loop.run_forever()
        self._loop.run_until_complete(self._runner.cleanup())
        self._loop.close()

    def __enter__(self) -> TokenEndpoint:
        self._thread.start()
        if not self._ready.wait(START_TIMEOUT_S):
            raise RuntimeError("the test token endpoint did not start")
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._loop is not None
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(START_TIMEOUT_S)
