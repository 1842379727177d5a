"""Money at the channel edge under faults, on the whole platform (every service a process,
the PSP simulator, the embedded or given broker, PostgreSQL)."""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
import time
import uuid
from datetime import UTC, datetime
from typing import Any

import asyncpg
import httpx

from bench.end_to_end import percentile
from schemas import Topic, encode, new_command, topic_name
from schemas.refunds import RefundRequest, RequestRefund
from services.common.broker import build_broker
from services.common.launcher import Platform, PlatformInfo
from services.ledger.rebuild import rebuild_and_compare
from tests.e2e.conftest import PspFaults
from tests.e2e.helpers import eventually, ledger_balance, new_payment, webhook_lines
from tests.e2e.test_two_instances import ledger_facts
from tests.faults.conftest import CHANNEL_TIMEOUT_MS, Tally

FINAL = {"succeeded", "failed", "canceled", "expired"}


def payment(api: httpx.Client, payment_id: str) -> dict[str, Any]:
    body: dict[str, Any] = api.get(f"/v1/payments/{payment_id}").json()
    return body


def event_types(api: httpx.Client, payment_id: str) -> list[str]:
    return [event["type"] for event in payment(api, payment_id)["events"]]


async def _operation_attempts(database_url: str, kind: str, subject_id: str) -> int:
    connection = await asyncpg.connect(database_url, timeout=10)
    try:
        found = await connection.fetchval(
            "SELECT attempts FROM gateway.channel_operations WHERE kind = $1 AND subject_id = $2",
            kind,
            subject_id,
        )
        return int(found or 0)
    finally:
        await connection.close()


def operation_attempts(info: PlatformInfo, kind: str, subject_id: str) -> int:
    return asyncio.run(_operation_attempts(info.database_url, kind, subject_id))


def test_a_card_answering_too_late_six_times_while_captured_ends_succeeded(
    api: httpx.Client, info: PlatformInfo, psp_faults: PspFaults, tally: list[Tally]
) -> None:
    # Every answer of the acquirer comes after the connector's timeout (the capture is
    # done all the same), six times in a row: the card circuit opens on the way.
    psp_faults.set("card", latency_ms=2 * CHANNEL_TIMEOUT_MS)
    created = api.post("/v1/payments", json=new_payment(amount=4200, channel="card")).json()
    eventually(
        lambda: operation_attempts(info, "submit_payment", created["id"]) >= 6,
        timeout_s=60,
        what="six calls to the card acquirer without an answer",
    )
    failed_meanwhile = payment(api, created["id"])["status"] == "failed"
    psp_faults.reset()

    def ended() -> dict[str, Any] | None:
        body = payment(api, created["id"])
        return body if body["status"] in FINAL else None

    final = eventually(ended, timeout_s=60, what="the card payment to end")
    types = [event["type"] for event in final["events"]]
    entry = Tally(
        "1 card too slow 6x while capturing",
        lost=int(final["status"] != "succeeded" or failed_meanwhile),
        doubled=max(types.count("PaymentSucceeded") - 1, 0),
        stuck=0,
    )
    tally.append(entry)
    assert entry.clean, (entry, types)


def test_a_payer_paying_just_before_expiry_with_every_notification_lost_is_recorded(
    api: httpx.Client, platform: Platform, psp_faults: PspFaults, tally: list[Tally]
) -> None:
    clearing_before = ledger_balance(platform, "platform:refunds_clearing")
    # No notification ever arrives (payment or refund): only queries and the close tell.
    psp_faults.set("alipay", lose_notifications=True)
    created = api.post("/v1/payments", json=new_payment(amount=650, expires_in_seconds=2)).json()
    assert created["status"] == "requires_payment", created
    assert httpx.post(created["next_action"]["url"], timeout=5).status_code == 200

    def settled() -> dict[str, Any] | None:
        body = payment(api, created["id"])
        types = [event["type"] for event in body["events"]]
        if "PaymentSucceeded" in types:
            return body
        refunded = [r for r in body["refunds"] if r["status"] == "succeeded"]
        return body if refunded else None

    body = eventually(settled, timeout_s=60, what="the paid money recorded and settled")
    types = [event["type"] for event in body["events"]]
    paid = types.count("PaymentSucceeded") + types.count("PaymentPaidAfterClose")
    refunds = [r for r in body["refunds"] if r["status"] == "succeeded"]
    if "PaymentPaidAfterClose" in types:
        # Paid after the close: owed back, and paid back.
        eventually(
            lambda: ledger_balance(platform, "platform:refunds_clearing") == clearing_before,
            what="the refund to square the clearing account",
        )
    entry = Tally(
        "2 paid near expiry, notifications lost",
        lost=int(paid == 0),
        doubled=max(paid - 1, 0) + max(len(refunds) - 1, 0),
        stuck=int("PaymentPaidAfterClose" in types and not refunds),
        note=body["status"] + (" + refunded" if refunds else ""),
    )
    tally.append(entry)
    assert entry.clean, (entry, types)


def _time_to_payable(api: httpx.Client, channel: str) -> float:
    started = time.monotonic()
    created = api.post("/v1/payments", json=new_payment(amount=300, channel=channel)).json()
    if created["status"] != "requires_payment":
        eventually(
            lambda: payment(api, created["id"])["status"] == "requires_payment",
            timeout_s=60,
            what=f"the {channel} payment to be payable",
        )
    return time.monotonic() - started


def test_a_hanging_channel_does_not_slow_payments_on_another_channel(
    api: httpx.Client, psp_faults: PspFaults, tally: list[Tally]
) -> None:
    count = 12
    before = [_time_to_payable(api, "alipay") for _ in range(count)]
    # WeChat Pay now hangs for the whole timeout on every call, under load.
    psp_faults.set("wechat_pay", latency_ms=3 * CHANNEL_TIMEOUT_MS)
    with concurrent.futures.ThreadPoolExecutor(max_workers=4) as pool:
        hanging = [
            pool.submit(
                api.post, "/v1/payments", json=new_payment(amount=300, channel="wechat_pay")
            )
            for _ in range(8)
        ]
        during = [_time_to_payable(api, "alipay") for _ in range(count)]
        answers = [future.result() for future in hanging]
    # Once its circuit opened, new wechat_pay payments were refused at once (503); those
    # taken before wait for the channel and go through when it answers again.
    taken = [answer.json()["id"] for answer in answers if answer.status_code == 201]
    refused = [answer.json()["code"] for answer in answers if answer.status_code == 503]
    assert len(taken) + len(refused) == len(answers), [a.text for a in answers]
    assert set(refused) <= {"channel_unavailable"}
    psp_faults.reset()

    def all_payable() -> bool:
        return all(payment(api, each)["status"] == "requires_payment" for each in taken)

    eventually(all_payable, timeout_s=60, what="the waiting wechat_pay payments to go through")
    p99_before, p99_during = percentile(before, 0.99), percentile(during, 0.99)
    entry = Tally(
        "5 wechat_pay hangs under load",
        lost=0,
        doubled=0,
        # An alipay payment that waited behind the hanging channel would take at least
        # one channel timeout.
        stuck=sum(1 for seconds in during if seconds >= CHANNEL_TIMEOUT_MS / 1000),
        note=f"alipay p99 {p99_before * 1000:.0f} ms without, {p99_during * 1000:.0f} ms with;"
        f" wechat_pay {len(taken)} waited, {len(refused)} refused by its circuit",
    )
    tally.append(entry)
    assert entry.clean, (entry, before, during)


def test_a_forged_cross_merchant_refund_on_the_bus_is_refused(
    api: httpx.Client, info: PlatformInfo, platform: Platform, tally: list[Tally]
) -> None:
    created = api.post("/v1/payments", json=new_payment(amount=880)).json()
    assert httpx.post(created["next_action"]["url"], timeout=5).status_code == 200
    eventually(
        lambda: payment(api, created["id"])["status"] == "succeeded", what="the payment paid"
    )
    forged = new_command(
        RequestRefund,
        RefundRequest(refund_id=f"re_{uuid.uuid4().hex}", amount_minor=880, reason="forged"),
        aggregate_id=created["id"],
        merchant_id="mch_intruder",
        producer="forger",
        issued_at=datetime.now(UTC),
        correlation_id=f"corr-{uuid.uuid4().hex[:8]}",
        causation_id=None,
    )
    prefix = platform.service_settings.kafka_topic_prefix
    asyncio.run(_publish(platform, topic_name(Topic.PAYMENTS_COMMANDS, prefix), forged))
    eventually(
        lambda: asyncio.run(_dead_lettered(info.database_url, forged.command_id)),
        what="the forged refund to be dead-lettered",
    )
    body = payment(api, created["id"])
    entry = Tally(
        "6 forged cross-merchant refund",
        lost=0,
        doubled=len(body["refunds"]),
        stuck=0,
        note="dead-lettered: merchant_mismatch",
    )
    tally.append(entry)
    assert entry.clean, body


async def _publish(platform: Platform, topic: str, command: Any) -> None:
    broker = build_broker(platform.service_settings, client_id="fault-forger")
    await broker.connect()
    try:
        await broker.publish(encode(command), topic=topic, key=command.aggregate_id.encode())
    finally:
        await broker.stop()


async def _dead_lettered(database_url: str, message_id: uuid.UUID) -> bool:
    connection = await asyncpg.connect(database_url, timeout=10)
    try:
        reason = await connection.fetchval(
            "SELECT reason FROM payment_center.dead_letters WHERE message_id = $1", message_id
        )
        return reason is not None and "merchant" in reason
    finally:
        await connection.close()


KILLED_SERVICES = ("gateway", "connector", "payment_center", "ledger", "risk", "notifier")


def _pay_through(info: PlatformInfo, stop: threading.Event, accepted: list[str]) -> None:
    """Create and pay payments one after another until `stop`, riding out the service
    that is down: a create that fails was never accepted, one that answered 201 is kept
    and followed until it can be paid."""
    with httpx.Client(
        base_url=info.api_base_url,
        headers={"Authorization": f"Bearer {info.demo_api_key}"},
        timeout=30.0,
    ) as client:
        while not stop.is_set():
            try:
                created = client.post(
                    "/v1/payments",
                    json=new_payment(amount=321),
                    headers={"Idempotency-Key": uuid.uuid4().hex},
                )
            except httpx.HTTPError:
                time.sleep(0.2)
                continue
            if created.status_code != 201:
                time.sleep(0.2)
                continue
            payment_id = created.json()["id"]
            accepted.append(payment_id)
            deadline = time.monotonic() + 90
            while time.monotonic() < deadline:
                try:
                    body = client.get(f"/v1/payments/{payment_id}").json()
                    if body.get("next_action"):
                        httpx.post(body["next_action"]["url"], timeout=15).raise_for_status()
                        break
                except (httpx.HTTPError, ValueError):
                    pass
                time.sleep(0.2)


def test_every_service_killed_in_turn_under_load_loses_and_doubles_nothing(
    api: httpx.Client, info: PlatformInfo, platform: Platform, tally: list[Tally]
) -> None:
    accepted: list[str] = []
    stop = threading.Event()
    payers = [threading.Thread(target=_pay_through, args=(info, stop, accepted)) for _ in range(3)]
    for payer in payers:
        payer.start()
    try:
        for name in KILLED_SERVICES:
            time.sleep(1.0)  # payments in every stage when the kill comes
            platform.restart(name, ready_url=platform._ready_urls[name])
        time.sleep(1.0)
    finally:
        stop.set()
        for payer in payers:
            payer.join(timeout=120)

    def final_statuses() -> dict[str, str] | None:
        statuses = {each: payment(api, each)["status"] for each in accepted}
        return statuses if all(status in FINAL for status in statuses.values()) else None

    statuses = eventually(final_statuses, timeout_s=120, what="every accepted payment to end")
    succeeded = [each for each, status in statuses.items() if status == "succeeded"]

    def ledger_caught_up() -> tuple[dict[str, int], int, int] | None:
        facts = asyncio.run(ledger_facts(info.database_url))
        return facts if facts[1] >= len(succeeded) else None

    sums, entries, sources = eventually(ledger_caught_up, timeout_s=60, what="the ledger")
    _log, differences = asyncio.run(
        rebuild_and_compare(
            info.kafka_bootstrap_servers,
            info.database_url,
            platform.service_settings.kafka_topic_prefix,
        )
    )

    def notified() -> set[str]:
        lines = webhook_lines(info.demo_webhook_log) if info.demo_webhook_log else []
        return {
            line["event"]["data"]["object"]["id"]
            for line in lines
            if line["event"] and line["event"]["type"] == "payment.succeeded"
        }

    eventually(lambda: set(succeeded) <= notified(), timeout_s=60, what="every merchant webhook")
    doubled = [each for each in succeeded if event_types(api, each).count("PaymentSucceeded") != 1]
    entry = Tally(
        "4 kill -9 of each service under load",
        lost=len(accepted) - len(succeeded) + len(set(succeeded) - notified()),
        doubled=len(doubled) + (entries - sources),
        stuck=int(bool(differences)) + sum(1 for total in sums.values() if total != 0),
        note=f"{len(accepted)} payments accepted; {', '.join(KILLED_SERVICES)} killed in turn",
    )
    tally.append(entry)
    assert entry.clean, (entry, statuses, differences, sums)
