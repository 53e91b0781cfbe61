"""Small applications run by ``tests/deployments/test_deployments.py`` under real servers.

Each module is what a user would deploy: it calls :func:`otel_greenflash.configure` at import
(``_setup.setup()``; ``DEPLOY_SETUP=none`` skips it, for zero-code runs and for measuring the
server alone) and emits business events through the OpenTelemetry API only. The servers import
them as ``tests.deployments.<module>`` with the repository root on ``PYTHONPATH``.
"""
