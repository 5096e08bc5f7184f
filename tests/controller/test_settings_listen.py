"""Listen addresses and admin auth settings are checked when the file loads, not when the port binds."""

from __future__ import annotations

import pytest

from pdscale.controller.runtime.settings import SettingsError, parse_settings


def _with(**sections: object) -> dict[str, object]:
    pools = [{"name": "prefill", "role": "prefill", "gpus_per_replica": 4, "max_replicas": 4}]
    return {"pools": pools, **sections}


@pytest.mark.parametrize("listen", ["0.0.0.0:99999", "127.0.0.1:-1", "127.0.0.1", "127.0.0.1:http", "[::1:50051"])
@pytest.mark.parametrize("section", ["admin", "telemetry"])
def test_bad_listen_address_is_refused(section: str, listen: str) -> None:
    """A port outside 0..65535 or a malformed address is a settings error naming the field."""
    with pytest.raises(SettingsError, match=rf"{section}\.listen: .*port between 0 and 65535|brackets"):
        parse_settings(_with(**{section: {"listen": listen}}), "cfg.yaml")


@pytest.mark.parametrize("listen", ["127.0.0.1:0", "0.0.0.0:65535", "[::1]:50051", "localhost:9464"])
def test_good_listen_addresses_load(listen: str) -> None:
    """Ordinary addresses, IPv6 in brackets and port 0 (any free port) load."""
    s = parse_settings(_with(admin={"listen": listen}, telemetry={"listen": listen}), "cfg.yaml")
    assert (s.admin.listen, s.telemetry.listen) == (listen, listen)


def test_read_auth_without_token_is_refused() -> None:
    """auth_read_only without admin.token would refuse every read on a network address: a settings error."""
    with pytest.raises(SettingsError, match="auth_read_only needs a token"):
        parse_settings(_with(admin={"auth_read_only": True}), "cfg.yaml")
