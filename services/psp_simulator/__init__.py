"""An Alipay-style payment service provider, run as its own process for tests and demos.

`python -m services.psp_simulator` starts it; see `settings.PspSimulatorSettings`.
"""
