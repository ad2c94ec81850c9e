"""Upstream: summaries, alerts and events of the gateway into a time-series store.

Store-and-forward over an unreliable uplink (docs/forwarding.md): the summariser turns the
journal's committed readings into per-interval points, the backlog (SQLite, beside the
journal) holds them within byte budgets, the drain sends them with the InfluxDB v2 write
API and advances a durable checkpoint only on a 2xx.
"""
