"""Outbound adapters: the network server's downlink endpoint."""
