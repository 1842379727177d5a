"""The `payrail` command."""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
import time
import uuid
from collections.abc import Coroutine
from types import FrameType
from typing import Any

from services.common.launcher import (
    LauncherSettings,
    Platform,
    PlatformInfo,
    PortsInUseError,
    check_ports_free,
    operator_settings,
    prepare_infrastructure,
)
from services.common.logging import configure_logging
from services.common.settings import ServiceSettings


def _print_welcome(info: PlatformInfo) -> None:
    curl = (
        f"curl -s -X POST {info.api_base_url}/v1/payments \\\n"
        f"  -H 'Authorization: Bearer {info.demo_api_key}' \\\n"
        f'  -H "Idempotency-Key: $(uuidgen || date +%s%N)" \\\n'
        "  -H 'Content-Type: application/json' \\\n"
        '  -d \'{"amount": 1999, "currency": "CNY", "channel": "alipay",'
        ' "order_id": "order-1001", "description": "Two coffees"}\''
    )
    print(
        f"""
payrail is running.

  API base URL     {info.api_base_url}
  OpenAPI docs     {info.api_base_url}/docs   (document: {info.api_base_url}/openapi.json)
  Demo API key     {info.demo_api_key}
  Admin key        {info.admin_key}
  PSP simulator    {info.psp_base_url}
  Connector        {info.connector_base_url}   (channel and bank callbacks)
  Kafka            {info.kafka_bootstrap_servers}
  Database         {info.database_url}
  Logs             {info.log_dir}/
  Demo webhooks    {info.demo_webhook_log}

Create a payment:

{curl}

Pay it as the payer would (POST the next_action.url from the answer):

  curl -s -X POST <next_action.url>

Then read it back and see the balance:

  curl -s {info.api_base_url}/v1/payments/<id> -H 'Authorization: Bearer {info.demo_api_key}'
  curl -s {info.api_base_url}/v1/balance -H 'Authorization: Bearer {info.demo_api_key}'

Refund part of it (leave out "amount" to refund the rest):

  curl -s -X POST {info.api_base_url}/v1/payments/<id>/refunds \\
    -H 'Authorization: Bearer {info.demo_api_key}' -H 'Content-Type: application/json' \\
    -d '{{"amount": 500, "reason": "damaged"}}'

Other channels: "channel": "wechat_pay" (QR code) or "card" (paid at once).
Simulator faults per channel: curl -s -X PUT {info.psp_base_url}/_sim/faults/alipay \\
    -H 'Content-Type: application/json' -d '{{"duplicate_notifications": true}}'

A process that exits is restarted (with a growing wait if it keeps exiting).
Press Ctrl-C to stop every process.
""",
        flush=True,
    )


# How often the console loop looks for processes that exited. Ctrl-C reaches the services
# too (one process group); the stop request is checked before the next round, so the
# processes stopping on Ctrl-C are never taken for crashed ones and restarted.
SUPERVISION_INTERVAL_S = 0.5


def run(_: argparse.Namespace) -> int:
    configure_logging("launcher", "WARNING", "console")
    stop_requested = False

    def request_stop(signum: int, frame: FrameType | None) -> None:
        nonlocal stop_requested
        stop_requested = True

    launcher_settings = LauncherSettings()
    # Checked before anything starts: a second `make run` would otherwise start a broker
    # and a database, then fail against the first run's services on their ports.
    try:
        check_ports_free(launcher_settings)
    except PortsInUseError as error:
        print(error, file=sys.stderr, flush=True)
        return 1
    print("Starting payrail: broker, database, migrations, six processes...", flush=True)
    with Platform(launcher_settings, ServiceSettings()) as platform:
        try:
            info = platform.start()
        except PortsInUseError as error:
            # Taken in the moment between the check above and the start.
            print(error, file=sys.stderr, flush=True)
            return 1
        _print_welcome(info)
        signal.signal(signal.SIGINT, request_stop)
        signal.signal(signal.SIGTERM, request_stop)
        while not stop_requested:
            for line in platform.supervise_once():
                print(line, flush=True)
            time.sleep(SUPERVISION_INTERVAL_S)
        print("\nStopping payrail...", flush=True)
    print("Stopped.")
    return 0


def migrate(_: argparse.Namespace) -> int:
    configure_logging("migrate", "INFO", "console")
    asyncio.run(prepare_infrastructure(ServiceSettings()))
    return 0


def export_schemas(arguments: argparse.Namespace) -> int:
    """Write (or with --check, verify) the JSON Schemas, AsyncAPI, OpenAPI and configuration
    documents."""
    from schemas.export import check_exports, write_exports
    from services.common.settings_doc import CONFIGURATION_DOC, configuration_doc
    from services.gateway.openapi_doc import OPENAPI_DOC, openapi_document

    documents = {CONFIGURATION_DOC: configuration_doc(), OPENAPI_DOC: openapi_document()}
    if arguments.check:
        stale = check_exports()
        stale += [
            path
            for path, text in documents.items()
            if not path.exists() or path.read_text() != text
        ]
        for path in stale:
            print(f"stale: {path}", file=sys.stderr)
        return 1 if stale else 0
    for path in write_exports():
        print(f"wrote {path}")
    for path, text in documents.items():
        path.parent.mkdir(exist_ok=True)
        path.write_text(text)
        print(f"wrote {path}")
    return 0


def ledger_rebuild(_: argparse.Namespace) -> int:
    """Replay the event log and compare every ledger balance; non-zero on a difference."""
    from services.ledger import rebuild

    settings = operator_settings()
    return rebuild.run(
        settings.kafka_bootstrap_servers, settings.database_url, settings.kafka_topic_prefix
    )


def _run_operator_command(command: Coroutine[Any, Any, int]) -> int:
    from services.common.dead_letters_cli import DatabaseUnreachable

    try:
        return asyncio.run(command)
    except DatabaseUnreachable as error:
        print(error, file=sys.stderr)
        return 2


def dead_letters_list(arguments: argparse.Namespace) -> int:
    from services.common import dead_letters_cli

    return _run_operator_command(
        dead_letters_cli.list_all(operator_settings().database_url, arguments.limit, sys.stdout)
    )


def dead_letters_show(arguments: argparse.Namespace) -> int:
    from services.common import dead_letters_cli

    return _run_operator_command(
        dead_letters_cli.show(operator_settings().database_url, arguments.id, sys.stdout)
    )


def dead_letters_redrive(arguments: argparse.Namespace) -> int:
    from services.common import dead_letters_cli

    if (arguments.id is None) == (not arguments.all):
        print("name one dead letter ID, or --all", file=sys.stderr)
        return 2
    return _run_operator_command(
        dead_letters_cli.redrive(
            operator_settings().database_url, arguments.id, arguments.wait_s, sys.stdout
        )
    )


def _add_dead_letter_commands(commands: Any) -> None:
    letters = commands.add_parser(
        "dead-letters", help="messages a consumer could not apply"
    ).add_subparsers(dest="dead_letters_command", required=True)
    listing = letters.add_parser("list", help="the newest dead letters of every service")
    listing.add_argument("--limit", type=int, default=100)
    listing.set_defaults(handler=dead_letters_list)
    showing = letters.add_parser("show", help="one dead letter with its body and reason")
    showing.add_argument("id", type=uuid.UUID)
    showing.set_defaults(handler=dead_letters_show)
    redriving = letters.add_parser(
        "redrive", help="apply parked letters again through their consumer (once each)"
    )
    redriving.add_argument("id", type=uuid.UUID, nargs="?")
    redriving.add_argument("--all", action="store_true", help="every parked dead letter")
    redriving.add_argument(
        "--wait-s", type=float, default=30.0, help="longest wait for the services to apply"
    )
    redriving.set_defaults(handler=dead_letters_redrive)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="payrail", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("run", help="start the whole platform locally").set_defaults(handler=run)
    commands.add_parser("migrate", help="create topics and apply migrations").set_defaults(
        handler=migrate
    )
    export = commands.add_parser("export-schemas", help="write JSON Schema and AsyncAPI files")
    export.add_argument("--check", action="store_true", help="fail when the files are stale")
    export.set_defaults(handler=export_schemas)
    ledger = commands.add_parser("ledger", help="ledger operations").add_subparsers(
        dest="ledger_command", required=True
    )
    ledger.add_parser(
        "rebuild", help="replay the event log and compare every balance with the live ledger"
    ).set_defaults(handler=ledger_rebuild)
    _add_dead_letter_commands(commands)
    arguments = parser.parse_args(argv)
    code: int = arguments.handler(arguments)
    return code


if __name__ == "__main__":
    sys.exit(main())
