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
    jsonl.write_text("\n".join(json.dumps(row) for row in rows) + "\n{broken\n")
    third = runner.invoke(app, ["import", str(jsonl), "--source", "study"])
    assert "1 accepted, 0 duplicates, 2 rejected" in third.stdout

    published = asyncio.run(
        read_records(kafka_settings, topic_name(kafka_settings, Topic.DEMAND_RECEIVED), count=3)
    )
    values = {json.loads(r.value)["id"]: json.loads(r.value) for r in published}
    assert sorted(values) == ["h-1", "h-2", "j-1"]
    assert values["h-1"]["text"] == "Where is my engineer? Call [phone]"
    assert values["h-1"]["attributes"] == {"site": "leeds"}
    assert values["h-1"]["source"] == "study"
