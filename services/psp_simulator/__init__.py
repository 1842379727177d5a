"""A payment service provider simulator, run as its own process for tests and demos: the
Alipay-style, WeChat-Pay-style and card channels and the bank rail, one package each
(`alipay/`, `wechat_pay/`, `card/`, `bank/`), wired by `app`.

`python -m services.psp_simulator` starts it; see `settings.PspSimulatorSettings`.
"""
