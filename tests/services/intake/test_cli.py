"""`demandscope keys ...` and `demandscope import` through the real command line."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime
from pathlib import Path

import pytest
from typer.testing import CliRunner

from services.cli.main import app
from shared.kafka.settings import KafkaSettings
from shared.topics import Topic, topic_name
from tests.support.factories import demand_body
from tests.support.kafka_io import read_records

pytestmark = pytest.mark.integration

runner = CliRunner()


@pytest.fixture
def cli_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, kafka_settings: KafkaSettings) -> Path:
    monkeypatch.setenv("DEMANDSCOPE_AUTH_DATABASE_URL", f"sqlite+aiosqlite:///{tmp_path / 'a.db'}")
    monkeypatch.setenv(
        "DEMANDSCOPE_INTAKE_DATABASE_URL", f"sqlite+aiosqlite:///{tmp_path / 'i.db'}"
    )
    monkeypatch.setenv("DEMANDSCOPE_KAFKA_BOOTSTRAP_SERVERS", kafka_settings.bootstrap_servers)
    monkeypatch.setenv("DEMANDSCOPE_KAFKA_TOPIC_PREFIX", kafka_settings.topic_prefix)
    return tmp_path


def test_keys_are_created_listed_and_revoked(cli_env: Path) -> None:
    created = runner.invoke(app, ["keys", "create", "--source", "crm", "--scopes", "read"])
    assert created.exit_code == 0, created.output
    plaintext = created.stdout.splitlines()[0]
    key_id = plaintext.split("_")[1]
    listed = runner.invoke(app, ["keys", "list"])
    assert key_id in listed.stdout
    assert "crm" in listed.stdout
    assert plaintext not in listed.stdout
    assert runner.invoke(app, ["keys", "revoke", key_id]).exit_code == 0
    assert runner.invoke(app, ["keys", "revoke", key_id]).exit_code == 1
    refused = runner.invoke(app, ["keys", "create", "--source", "no spaces"])
    assert refused.exit_code != 0


def test_import_publishes_valid_rows_once_and_files_the_rejected_with_reasons(
    cli_env: Path, kafka_settings: KafkaSettings
) -> None:
    now = datetime.now(UTC).isoformat()
    csv_file = cli_env / "study.csv"
    csv_file.write_text(
        "id,occurred_at,channel,customer_ref,text,attr.site\n"
        f"h-1,{now},phone,C-1,Where is my engineer? Call 07700 900123,leeds\n"
        f"h-2,{now},letter,C-2,I want to pay by direct debit,\n"
        f"h-3,2026-01-01T10:00:00,phone,C-3,No time zone here,\n"
        f"h-4,{now},pigeon,C-4,Unknown channel,\n"
    )
    first = runner.invoke(app, ["import", str(csv_file), "--source", "study"])
    assert first.exit_code == 0, first.output
    assert "2 accepted, 0 duplicates, 2 rejected of 4 rows" in first.stdout
    rejected = [
        json.loads(line) for line in (cli_env / "study.csv.rejected.jsonl").read_text().splitlines()
    ]
    assert [(r["line"], r["errors"][0]["field"]) for r in rejected] == [
        (4, "occurred_at"),
        (5, "channel"),
    ]

    again = runner.invoke(app, ["import", str(csv_file), "--source", "study"])
    assert "0 accepted, 2 duplicates, 2 rejected" in again.stdout

    jsonl = cli_env / "more.jsonl"
    rows = [
        demand_body(id="j-1", occurred_at=now, channel="chat", source=...),  # the file's source
        demand_body(id="j-2", occurred_at=now, channel="chat", source="someone-else"),
    ]
    hostile = "[" * 100_000 + "]" * 100_000  # json.loads raises RecursionError on it
    jsonl.write_text("\n".join(json.dumps(row) for row in rows) + "\n{broken\n" + hostile + "\n")
    third = runner.invoke(app, ["import", str(jsonl), "--source", "study"])
    assert third.exit_code == 0, third.stdout
    assert "1 accepted, 0 duplicates, 3 rejected" in third.stdout

    published = asyncio.run(
        read_records(kafka_settings, topic_name(kafka_settings, Topic.DEMAND_RECEIVED), count=3)
    )
    values = {json.loads(r.value)["id"]: json.loads(r.value) for r in published}
    assert sorted(values) == ["h-1", "h-2", "j-1"]
    assert values["h-1"]["text"] == "Where is my engineer? Call [phone]"
    assert values["h-1"]["attributes"] == {"site": "leeds"}
    assert values["h-1"]["source"] == "study"


def test_import_masks_free_text_and_files_refused_identifiers_without_their_values(
    cli_env: Path, kafka_settings: KafkaSettings
) -> None:
    """Issue 10, item 11: the rejected-rows file says why, never what (nor any raw value)."""
    now = datetime.now(UTC).isoformat()
    planted = ["4111 1111 1111 1111", "4111111111111111", "jo@example.com", "07700900123"]
    csv_file = cli_env / "personal.csv"
    csv_file.write_text(
        "id,occurred_at,channel,customer_ref,case_ref,text,team,reason_code,attr.contact\n"
        f"p-1,{now},phone,C-1,,card 4111 1111 1111 1111,jo@example.com,07700900123,"
        "jo@example.com\n"
        f"p-2,{now},phone,07700900123,,fine,,,jo@example.com\n"
        f"p-3,{now},phone,C-3,4111111111111111,fine,,,\n"
        f"jo@example.com,{now},phone,C-4,,fine,,,\n"
    )
    result = runner.invoke(app, ["import", str(csv_file), "--source", "study"])
    assert result.exit_code == 0, result.output
    assert "1 accepted, 0 duplicates, 3 rejected of 4 rows" in result.stdout
    rejected_text = (cli_env / "personal.csv.rejected.jsonl").read_text()
    assert [value for value in planted if value in rejected_text + result.output] == []
    rejected = [json.loads(line) for line in rejected_text.splitlines()]
    assert [(r["line"], r["errors"]) for r in rejected] == [
        (3, [{"field": "customer_ref", "reason": REFUSED.format("a phone number")}]),
        (4, [{"field": "case_ref", "reason": REFUSED.format("a payment card number")}]),
        (5, [{"field": "id", "reason": REFUSED.format("an e-mail address")}]),
    ]
    assert rejected[0]["row"]["attributes"] == {"contact": "[email]"}

    (record,) = asyncio.run(
        read_records(kafka_settings, topic_name(kafka_settings, Topic.DEMAND_RECEIVED), count=1)
    )
    assert [value for value in planted if value.encode() in record.value] == []
    value = json.loads(record.value)
    assert (value["text"], value["team"], value["reason_code"]) == (
        "card [card]",
        "[email]",
        "[phone]",
    )
    assert value["attributes"] == {"contact": "[email]"}

    personal_source = runner.invoke(app, ["import", str(csv_file), "--source", "07700900123"])
    assert personal_source.exit_code != 0
    assert "looks like a phone number" in personal_source.output
    assert "07700900123" not in personal_source.output
    personal_key = runner.invoke(app, ["keys", "create", "--source", "jo@example.com"])
    assert personal_key.exit_code != 0
    assert "jo@example.com" not in personal_key.output


REFUSED = "looks like {}; send an opaque reference, not personal data"


def test_migrate_down_keeps_the_ids_a_token_published(cli_env: Path) -> None:
    """A code rollback's step (docs/operations.md): the ledger down to intake_0003 folds
    token confirmations into the state column, all the older code reads."""
    from datetime import timedelta

    from sqlalchemy import text

    from services.intake.ledger import Claim, IdempotencyLedger, new_token
    from shared.database.engine import create_engine

    assert runner.invoke(app, ["intake", "migrate"]).exit_code == 0
    url = f"sqlite+aiosqlite:///{cli_env / 'i.db'}"

    async def accept() -> None:
        engine = create_engine(url)
        ledger = IdempotencyLedger(engine, lease=timedelta(seconds=60))
        writer = asyncio.create_task(ledger.run())
        await asyncio.sleep(0)
        key, token = ("demand", "demo", "rolled-back"), new_token()
        assert await ledger.claim([key], token) == [Claim.CLAIMED]
        ledger.confirm_soon([key], token)
        ledger.request_stop()
        await asyncio.wait_for(writer, 10)
        await engine.dispose()

    async def state() -> str:
        engine = create_engine(url)
        async with engine.connect() as connection:
            found = await connection.execute(
                text("SELECT state FROM intake_accepted_events WHERE event_id = 'rolled-back'")
            )
            value = str(found.scalar_one())
        await engine.dispose()
        return value

    asyncio.run(accept())
    assert asyncio.run(state()) == "pending"  # published by its token only
    down = runner.invoke(app, ["intake", "migrate", "--downgrade-to", "intake_0003"])
    assert down.exit_code == 0, down.output
    assert asyncio.run(state()) == "published"
