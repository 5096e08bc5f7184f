"""pdscale controller: the daemon that sizes prefill and decode pools against their SLOs."""

__all__: list[str] = []
