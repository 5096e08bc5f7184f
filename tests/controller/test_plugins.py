"""The plugin registry: entry points, built-ins included; unknown and duplicate names fail clearly."""

from __future__ import annotations

from importlib.metadata import EntryPoint

import pytest

from pdscale.controller.policies.static import StaticPolicy
from pdscale.controller.runtime.plugins import (
    DuplicatePluginError,
    PluginError,
    PluginGroup,
    Registry,
    UnknownPluginError,
)


class TestRegistry:
    def test_builtins_come_from_entry_points(self) -> None:
        """Built-in policies are discovered through the installed distribution's entry points."""
        reg = Registry()
        assert "static" in reg.names(PluginGroup.POLICIES)
        assert reg.load(PluginGroup.POLICIES, "static") is StaticPolicy

    def test_unknown_name_lists_available(self) -> None:
        """Asking for a missing plugin names the ones that exist."""
        reg = Registry()
        with pytest.raises(UnknownPluginError, match=r"unknown policy 'nope'; available: .*static"):
            reg.load(PluginGroup.POLICIES, "nope")

    def test_duplicate_names_fail_at_start(self) -> None:
        """Two distributions registering one name fail when the registry is built."""
        eps = [
            EntryPoint("x", "pkg_a.mod:A", PluginGroup.POLICIES.value),
            EntryPoint("x", "pkg_b.mod:B", PluginGroup.POLICIES.value),
        ]
        with pytest.raises(DuplicatePluginError, match="registered twice"):
            Registry(eps)

    def test_import_failure_names_plugin(self) -> None:
        """A plugin whose module cannot be imported gives an error naming it."""
        reg = Registry([EntryPoint("ghost", "no_such_module_pdscale:X", PluginGroup.POLICIES.value)])
        with pytest.raises(PluginError, match=r"plugin 'ghost' .* failed to import"):
            reg.load(PluginGroup.POLICIES, "ghost")

    def test_bad_params_become_plugin_error(self) -> None:
        """A factory that rejects its parameters surfaces as a PluginError naming the plugin."""
        reg = Registry()
        with pytest.raises(PluginError, match=r"cannot build 'static'.*unknown parameter"):
            reg.create(PluginGroup.POLICIES, "static", {"replica": 3})

    def test_explicit_registration(self) -> None:
        """Factories can be registered directly for embedding and tests."""
        reg = Registry([])
        reg.register(PluginGroup.POLICIES, "mine", StaticPolicy)
        assert reg.names(PluginGroup.POLICIES) == ["mine"]
