"""Built-in scaling policies, registered through the ``pdscale.policies`` entry point group."""

__all__: list[str] = []
