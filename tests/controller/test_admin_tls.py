"""Admin API over TLS and mutual TLS with a CA generated for the test."""

from __future__ import annotations

import asyncio
import datetime as dt
import ipaddress
import socket
from pathlib import Path

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from structlog.testing import capture_logs

from pdscale.controller.admin._gen import admin_pb2 as pb
from pdscale.controller.admin._gen import admin_pb2_grpc as pb_grpc
from pdscale.controller.admin.server import start_admin_server
from pdscale.controller.runtime.settings import AdminSettings, SettingsError, TLSSettings
from tests.controller.test_admin_api import TOKEN, Harness, _settings


def _cert(
    name: str, issuer: tuple[x509.Certificate, ec.EllipticCurvePrivateKey] | None, *, ca: bool = False
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = dt.datetime.now(dt.UTC)
    b = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer[0].subject if issuer else subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if not ca:
        sans = [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
        b = b.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    cert = b.sign(issuer[1] if issuer else key, hashes.SHA256())
    return cert, key


def _write(tmp: Path, name: str, cert: x509.Certificate, key: ec.EllipticCurvePrivateKey) -> tuple[Path, Path]:
    c, k = tmp / f"{name}.crt", tmp / f"{name}.key"
    c.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    k.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return c, k


@pytest.fixture
def pki(tmp_path: Path) -> dict[str, Path]:
    ca = _cert("pdscale-test-ca", None, ca=True)
    ca_crt, _ = _write(tmp_path, "ca", *ca)
    srv_crt, srv_key = _write(tmp_path, "server", *_cert("localhost", ca))
    cli_crt, cli_key = _write(tmp_path, "client", *_cert("operator", ca))
    return {"ca": ca_crt, "srv_crt": srv_crt, "srv_key": srv_key, "cli_crt": cli_crt, "cli_key": cli_key}


def _status(port: int, creds: grpc.ChannelCredentials) -> pb.GetStatusResponse:
    with grpc.secure_channel(f"localhost:{port}", creds) as ch:
        resp: pb.GetStatusResponse = pb_grpc.AdminServiceStub(ch).GetStatus(pb.GetStatusRequest(), timeout=5)
        return resp


def test_tls_serves_verified_clients(tmp_path: Path, pki: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    """With TLS a client trusting the CA gets answers."""
    monkeypatch.setenv("PDSCALE_TEST_ADMIN_TOKEN", TOKEN)
    h = Harness(_settings(tls=TLSSettings(cert=pki["srv_crt"], key=pki["srv_key"])), tmp_path)
    try:
        creds = grpc.ssl_channel_credentials(root_certificates=pki["ca"].read_bytes())
        assert _status(h.server.port, creds).tick_s == 30.0
    finally:
        h.close()


def test_mtls_refuses_clients_without_certificate(
    tmp_path: Path, pki: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """With client_ca set, a client without a certificate is refused and one with a CA-signed certificate served."""
    monkeypatch.setenv("PDSCALE_TEST_ADMIN_TOKEN", TOKEN)
    tls = TLSSettings(cert=pki["srv_crt"], key=pki["srv_key"], client_ca=pki["ca"])
    h = Harness(_settings(tls=tls), tmp_path)
    try:
        anonymous = grpc.ssl_channel_credentials(root_certificates=pki["ca"].read_bytes())
        with pytest.raises(grpc.RpcError) as info:
            _status(h.server.port, anonymous)
        assert info.value.code() is grpc.StatusCode.UNAVAILABLE
        mutual = grpc.ssl_channel_credentials(
            root_certificates=pki["ca"].read_bytes(),
            private_key=pki["cli_key"].read_bytes(),
            certificate_chain=pki["cli_crt"].read_bytes(),
        )
        assert _status(h.server.port, mutual).tick_s == 30.0
    finally:
        h.close()


async def _start_and_stop(settings: AdminSettings) -> None:
    server = await start_admin_server(pb_grpc.AdminServiceServicer(), settings)  # type: ignore[arg-type]
    await server.stop(0)


def test_garbage_certificate_is_named(tmp_path: Path, pki: dict[str, Path]) -> None:
    """A certificate file that is not PEM is reported as that TLS file, not as a bind failure."""
    bad = tmp_path / "not-a-cert.pem"
    bad.write_text("hello\n")
    settings = AdminSettings(listen="127.0.0.1:0", tls=TLSSettings(cert=bad, key=pki["srv_key"]))
    with pytest.raises(SettingsError, match=r"admin\.tls\.cert: .*not-a-cert\.pem is not a PEM certificate"):
        asyncio.run(_start_and_stop(settings))


def test_key_of_another_certificate_is_a_tls_error(tmp_path: Path, pki: dict[str, Path]) -> None:
    """A key that does not belong to the certificate names both files and says the address is free."""
    settings = AdminSettings(listen="127.0.0.1:0", tls=TLSSettings(cert=pki["srv_crt"], key=pki["cli_key"]))
    with pytest.raises(SettingsError, match=r"admin\.tls: .*server\.crt.*client\.key") as info:
        asyncio.run(_start_and_stop(settings))
    assert "cannot bind" not in str(info.value)


def test_busy_address_is_still_a_bind_error(pki: dict[str, Path]) -> None:
    """With good TLS files, a port already in use is reported as admin.listen."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        tls = TLSSettings(cert=pki["srv_crt"], key=pki["srv_key"])
        with pytest.raises(SettingsError, match=r"admin\.listen: cannot bind"):
            asyncio.run(_start_and_stop(AdminSettings(listen=f"127.0.0.1:{port}", tls=tls)))


@pytest.mark.parametrize(
    ("listen", "tls", "warned"), [("0.0.0.0:0", False, True), ("0.0.0.0:0", True, False), ("127.0.0.1:0", False, False)]
)
def test_plaintext_on_a_network_address_warns(pki: dict[str, Path], listen: str, tls: bool, warned: bool) -> None:
    """Listening beyond loopback without TLS logs one admin_plaintext WARNING at start."""
    t = TLSSettings(cert=pki["srv_crt"], key=pki["srv_key"]) if tls else None
    with capture_logs() as events:
        asyncio.run(_start_and_stop(AdminSettings(listen=listen, tls=t)))
    plaintext = [e for e in events if e["event"] == "admin_plaintext"]
    assert [e["log_level"] for e in plaintext] == (["warning"] if warned else [])
