"""Sources turn the outside world into :class:`~alerts.models.AuthErrorEvent` objects.

``envelope`` decodes untrusted JSON strictly; ``native`` is the ``POST /v1/events`` format.
"""
