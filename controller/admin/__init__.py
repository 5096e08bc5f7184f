"""The gRPC admin API: servicer, server, auth and the ``pdscale admin`` client."""
