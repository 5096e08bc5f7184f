"""Start the admin gRPC server (grpc.aio) with health, reflection, auth, TLS/mTLS and message size limits."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from pathlib import Path

import grpc
import structlog
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from pdscale.controller.admin._gen import admin_pb2, admin_pb2_grpc
from pdscale.controller.admin.auth import SERVICE, TokenAuthInterceptor
from pdscale.controller.admin.calls import CallGuard
from pdscale.controller.admin.servicer import AdminServicer
from pdscale.controller.runtime.settings import AdminSettings, SettingsError, TLSSettings

__all__ = ["AdminServer", "is_loopback", "server_credentials", "start_admin_server"]

log = structlog.get_logger(__name__)


def is_loopback(listen: str) -> bool:
    """Whether ``host:port`` binds only the loopback interface."""
    host = listen.rpartition(":")[0].strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


_PEM_MARKERS = {"cert": b"-----BEGIN CERTIFICATE-----", "client_ca": b"-----BEGIN CERTIFICATE-----"}


def _read(path: Path, what: str) -> bytes:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise SettingsError(f"admin.tls.{what}: cannot read {path}: {exc.strerror}") from None
    marker = _PEM_MARKERS.get(what)
    if marker is not None and marker not in data:
        raise SettingsError(f"admin.tls.{what}: {path} is not a PEM certificate (no '{marker.decode()}' line)")
    if what == "key" and not (b"-----BEGIN " in data and b"PRIVATE KEY-----" in data):
        raise SettingsError(f"admin.tls.key: {path} is not a PEM private key (no 'BEGIN ... PRIVATE KEY' line)")
    return data


def server_credentials(tls: TLSSettings) -> grpc.ServerCredentials:
    """TLS credentials; mutual TLS (client certificates required) when ``client_ca`` is set."""
    key, cert = _read(tls.key, "key"), _read(tls.cert, "cert")
    ca = _read(tls.client_ca, "client_ca") if tls.client_ca is not None else None
    return grpc.ssl_server_credentials([(key, cert)], root_certificates=ca, require_client_auth=ca is not None)


async def _bind_error(listen: str, tls: TLSSettings | None, exc: RuntimeError) -> SettingsError:
    """Which setting a failed bind is about: grpc says "Failed to bind" for bad TLS material too."""
    if tls is not None:
        probe = grpc.aio.server(options=[("grpc.so_reuseport", 0)])
        try:
            probe.add_insecure_port(listen)
        except RuntimeError:
            pass  # the address itself is the problem
        else:
            return SettingsError(
                f"admin.tls: grpc refused the certificate {tls.cert} with the key {tls.key} (corrupt PEM, or a key "
                "that does not belong to the certificate); the address itself is free"
            )
        finally:
            await probe.stop(None)
    return SettingsError(f"admin.listen: cannot bind {listen} (in use, or not an address of this host): {exc}")


@dataclass(slots=True)
class AdminServer:
    """A running admin server and the port it bound."""

    server: grpc.aio.Server
    port: int
    address: str
    health: health.aio.HealthServicer

    async def stop(self, grace_s: float = 2.0) -> None:
        """Refuse new calls, let running ones finish for ``grace_s``, cancel streams."""
        await self.health.enter_graceful_shutdown()
        await self.server.stop(grace_s)


async def start_admin_server(servicer: AdminServicer, settings: AdminSettings) -> AdminServer:
    """Bind ``settings.listen`` (port 0 picks a free one) and start serving."""
    token = settings.token.resolve() if settings.token is not None else None
    loopback = is_loopback(settings.listen)
    if token is None and not loopback:
        log.warning("admin_no_token", listen=settings.listen, effect="mutating calls are refused")
    if settings.tls is None and not loopback:
        log.warning(
            "admin_plaintext",
            listen=settings.listen,
            effect="calls and the bearer token cross the network unencrypted",
            fix="set admin.tls (cert and key), or listen on 127.0.0.1 behind a TLS-terminating proxy",
        )
    options = [
        ("grpc.max_receive_message_length", settings.max_message_bytes),
        ("grpc.max_send_message_length", settings.max_message_bytes),
        ("grpc.so_reuseport", 0),
    ]
    interceptor = TokenAuthInterceptor(token, auth_read_only=settings.auth_read_only, allow_without_token=loopback)
    server = grpc.aio.server(interceptors=[CallGuard(), interceptor], options=options)
    admin_pb2_grpc.add_AdminServiceServicer_to_server(servicer, server)  # type: ignore[no-untyped-call]
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    names = (
        admin_pb2.DESCRIPTOR.services_by_name["AdminService"].full_name,
        health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
        reflection.SERVICE_NAME,
    )
    reflection.enable_server_reflection(names, server)
    try:
        if settings.tls is not None:
            port = server.add_secure_port(settings.listen, server_credentials(settings.tls))
        else:
            port = server.add_insecure_port(settings.listen)
    except RuntimeError as exc:
        raise await _bind_error(settings.listen, settings.tls, exc) from None
    await server.start()
    for name in ("", SERVICE):
        await health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    host = settings.listen.rpartition(":")[0]
    address = f"{host}:{port}"
    log.info("admin_listening", address=address, tls=settings.tls is not None, token=token is not None)
    return AdminServer(server=server, port=port, address=address, health=health_servicer)
