"""The HTTP side of the gateway: the device API (and, later, the admin listener)."""
