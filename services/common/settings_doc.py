"""Render every service's settings as a Markdown table, so the README cannot drift."""

from __future__ import annotations

from pathlib import Path

from pydantic import AliasChoices
from pydantic_settings import BaseSettings


def _env_names(cls: type[BaseSettings], name: str) -> list[str]:
    field = cls.model_fields[name]
    alias = field.validation_alias
    if isinstance(alias, AliasChoices):
        return [str(choice) for choice in alias.choices]
    if isinstance(alias, str):
        return [alias]
    prefix = str(cls.model_config.get("env_prefix", ""))
    return [f"{prefix}{name}".upper()]


def _default(cls: type[BaseSettings], name: str) -> str:
    field = cls.model_fields[name]
    if field.default_factory is not None:
        return "(computed)"
    value = field.default
    if value is None or value == "":
        return "(unset)"
    text = str(value.get_secret_value() if hasattr(value, "get_secret_value") else value)
    return f"`{text}`"


def settings_table(classes: list[tuple[str, type[BaseSettings]]]) -> str:
    from services.common.settings import ServiceSettings

    lines = ["| service | variable | default | meaning |", "|---|---|---|---|"]
    for owner, cls in classes:
        for name, field in cls.model_fields.items():
            inherited = cls is not ServiceSettings and issubclass(cls, ServiceSettings)
            if inherited and name in ServiceSettings.model_fields and name != "http_port":
                continue
            env = _env_names(cls, name)[0]
            description = (field.description or "").replace("|", "\\|").replace("\n", " ")
            lines.append(f"| {owner} | `{env}` | {_default(cls, name)} | {description} |")
    return "\n".join(lines) + "\n"


def all_settings() -> list[tuple[str, type[BaseSettings]]]:
    from services.common.launcher import LauncherSettings
    from services.common.settings import ServiceSettings
    from services.gateway.connector.settings import ConnectorSettings
    from services.gateway.settings import GatewaySettings
    from services.ledger.settings import LedgerSettings
    from services.notifier.settings import NotifierSettings
    from services.payment_center.settings import PaymentCenterSettings
    from services.psp_simulator.settings import PspSimulatorSettings
    from services.risk.settings import RiskSettings

    return [
        ("all services", ServiceSettings),
        ("gateway", GatewaySettings),
        ("connector", ConnectorSettings),
        ("payment_center", PaymentCenterSettings),
        ("ledger", LedgerSettings),
        ("risk", RiskSettings),
        ("notifier", NotifierSettings),
        ("psp_simulator", PspSimulatorSettings),
        ("launcher (`make run`)", LauncherSettings),
    ]


CONFIGURATION_DOC = Path(__file__).resolve().parents[2] / "docs" / "configuration.md"


def configuration_doc() -> str:
    return (
        "# Configuration\n\n"
        "Every setting is an environment variable (or a line in `.env`). This page is\n"
        "generated from the settings classes by `payrail export-schemas`; a test fails when\n"
        "it is stale.\n\n" + settings_table(all_settings())
    )
