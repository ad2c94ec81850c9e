"""The alert engine: rules over observations, per-alert state machine, durable history.

See docs/alerts.md. Entry points: :class:`gateway.alerts.engine.AlertEngine`,
:class:`gateway.alerts.config.AlertsConfig`.
"""
