"""Service layer: the one place configuration is changed.

CLI, ``config apply`` and the admin console all write through these functions.
Each write runs in one transaction, records an audit entry and bumps
``config_state.version`` so running gateways rebuild their snapshot.
"""
