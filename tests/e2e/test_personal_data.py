"""Personal data planted in every field of every input kind never comes out anywhere
(issue 10, item 11).

A distinct card number, e-mail address and phone number goes into every field of every way
in: a single demand, a batch, CloudEvents (structured, binary, batch), case events, labels,
the CSV import and a change note. Free text must be accepted and masked; a field that names
something must be refused with a 422 naming the field and the kind. Then the whole pipeline
(intake, classifier and metrics on the test broker) runs until everything accepted is
counted, and every topic and its dead letters (keys, values, headers; aborted transactions
too), every table of every database, every log line, every answer and every file under the
test's directory is searched for every planted value, in every form it was written.
"""

from __future__ import annotations

import asyncio
import csv
import json
import logging
from collections.abc import Iterator
from contextlib import AsyncExitStack
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import inspect, text
from typer.testing import CliRunner

from services.classifier.config import ClassifierSettings
from services.classifier.db.migrate import upgrade as upgrade_classifier
from services.classifier.main import create_app as create_classifier
from services.classifier.training import TrainedModel
from services.cli.main import app as cli
from services.intake.config import IntakeSettings
from services.intake.db.migrate import upgrade as upgrade_intake
from services.intake.main import create_app as create_intake
from services.metrics.config import MetricsSettings
from services.metrics.db.migrate import upgrade as upgrade_metrics
from services.metrics.main import create_app as create_metrics
from shared.auth.keys import Scope
from shared.auth.migrate import upgrade as upgrade_auth
from shared.auth.settings import AuthSettings
from shared.auth.store import ApiKeyStore
from shared.database.engine import create_engine
from shared.kafka.read_to_end import read_all
from shared.kafka.settings import KafkaSettings
from shared.topics import Topic, topic_name, topic_specs
from tests.services.classifier.conftest import store_version
from tests.support.apps import running
from tests.support.factories import case_event_body, cloudevent_body, demand_body, label_body
from tests.support.kafka_io import committed_to_end
from tests.support.waiting import wait_until

pytestmark = [pytest.mark.integration, pytest.mark.e2e]

KINDS = ("card", "email", "phone")
REASONS = {
    "card": "looks like a payment card number; send an opaque reference, not personal data",
    "email": "looks like an e-mail address; send an opaque reference, not personal data",
    "phone": "looks like a phone number; send an opaque reference, not personal data",
}
CE_STRUCTURED = {"Content-Type": "application/cloudevents+json"}
CE_BATCH = {"Content-Type": "application/cloudevents-batch+json"}


class Plants:
    """Distinct personal data for every field, and every form it may be found in."""

    def __init__(self) -> None:
        self._count = 0
        self.needles: set[str] = set()

    def _next(self) -> int:
        self._count += 1
        return self._count

    def card(self) -> str:
        """A Visa-like number, printed in fours."""
        body = f"4556{self._next():011d}"
        digits = body + _luhn_check_digit(body)
        fours = [digits[i : i + 4] for i in range(0, 16, 4)]
        self.needles |= {digits, " ".join(fours), "-".join(fours)}
        return " ".join(fours)

    def email(self) -> str:
        local = f"planted.person{self._next():03d}"
        self.needles |= {local, f"{local}@example.org"}
        return f"{local}@example.org"

    def phone(self) -> str:
        """A UK mobile number from Ofcom's drama range, printed nationally."""
        last = f"{self._next():03d}"
        self.needles |= {f"7700900{last}", f"7700 900{last}", f"7700-900-{last}"}
        return f"07700 900{last}"

    def compact(self, kind: str) -> str:
        """As an identifier would carry it: no spaces (a phone alternately international)."""
        if kind == "card":
            return self.card().replace(" ", "")
        if kind == "email":
            return self.email()
        national = self.phone().replace(" ", "")
        return national if self._count % 2 else "+44" + national[1:]

    def words(self) -> str:
        """Free text holding all three kinds."""
        return f"card {self.card()}, write to {self.email()} or ring {self.phone()}"

    def found_in(self, data: str | bytes) -> list[str]:
        raw = data.encode() if isinstance(data, str) else data
        return sorted(needle for needle in self.needles if needle.encode() in raw)


def _luhn_check_digit(body: str) -> str:
    total = 0
    for position, character in enumerate(reversed(body)):
        value = int(character)
        if position % 2 == 0:  # doubled: the check digit will be at position 0
            value = value * 2 - 9 if value > 4 else value * 2
        total += value
    return str((10 - total % 10) % 10)


async def test_personal_data_planted_everywhere_is_found_nowhere(
    kafka_settings: KafkaSettings,
    unique_group: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    seed_model: TrainedModel,
) -> None:
    caplog.set_level(logging.DEBUG)  # every log line of every part, DEBUG included
    plants = Plants()
    answers: list[str] = []  # every answer intake and metrics gave

    def refused(response: httpx.Response, *expected: tuple[str, str]) -> None:
        answers.append(response.text)
        assert response.status_code == 422, response.text
        errors = response.json()["errors"]
        assert errors == [{"field": field, "reason": REASONS[kind]} for field, kind in expected]

    def accepted(response: httpx.Response, status: int = 202) -> Any:
        answers.append(response.text)
        assert response.status_code == status, response.text
        return response.json()

    urls = {name: f"sqlite+aiosqlite:///{tmp_path / f'{name}.db'}" for name in DATABASES}
    for name, upgrade in DATABASES.items():
        await asyncio.to_thread(upgrade, urls[name])
    # The session's seed model (trained on shipped data alone) as the current version: the
    # classifier does not train at start.
    await store_version(urls["classifier"], seed_model.model, seed_model.metadata)
    store = ApiKeyStore(urls["auth"])
    scopes = [Scope.DEMANDS_WRITE, Scope.LABELS_WRITE, Scope.READ]
    api_key, _ = await store.create("demo", scopes)
    # A change to the system is the organisation's: it needs an organisation-wide key.
    org_key, _ = await store.create("team-lead", [*scopes, Scope.SOURCES_ALL])
    org = {"Authorization": f"Bearer {org_key}"}
    await store.close()
    auth = AuthSettings(database_url=urls["auth"])

    async with AsyncExitStack() as stack:
        intake = await stack.enter_async_context(
            running(
                create_intake(
                    IntakeSettings(kafka=kafka_settings, database_url=urls["intake"], auth=auth)
                )
            )
        )
        classifier = await stack.enter_async_context(
            running(
                create_classifier(
                    ClassifierSettings(
                        kafka=kafka_settings,
                        group_id=f"{unique_group}-classifier",
                        transactional_id=f"{unique_group}-tx",
                        model_dir=tmp_path / "models",
                        database_url=urls["classifier"],
                        auth=auth,
                    )
                )
            )
        )
        metrics = await stack.enter_async_context(
            running(
                create_metrics(
                    MetricsSettings(
                        kafka=kafka_settings,
                        database_url=urls["metrics"],
                        group_id=f"{unique_group}-metrics",
                        auth=auth,
                    )
                )
            )
        )
        for client in (intake, classifier, metrics):
            client.headers["Authorization"] = f"Bearer {api_key}"
        await wait_until(lambda: _ready(intake), what="intake ready")

        demand_ids: list[str] = []

        def free_text_demand(demand_id: str) -> dict[str, Any]:
            """A demand whose every free-text field (attribute names too) holds all three."""
            demand_ids.append(demand_id)
            return demand_body(
                id=demand_id,
                customer_ref=f"C-{demand_id}",
                case_ref=f"K-{demand_id}",
                text=plants.words(),
                reason_code=plants.words(),
                team=f"desk of {plants.email()}",
                attributes={"contact": plants.words(), f"rang {plants.phone()}": "twice"},
            )

        def identifier_cases(fields: tuple[str, ...]) -> Iterator[tuple[str, str, str]]:
            for field in fields:
                for kind in KINDS:
                    yield field, kind, plants.compact(kind)

        # -- single demand (plain JSON) ------------------------------------------------------
        accepted(await intake.post("/v1/demands", json=free_text_demand("pd-single")))
        for field, kind, value in identifier_cases(("id", "customer_ref", "case_ref", "source")):
            response = await intake.post("/v1/demands", json=demand_body(**{field: value}))
            refused(response, (field, kind))

        # -- batch (plain JSON) ----------------------------------------------------------------
        cases = list(identifier_cases(("id", "customer_ref", "case_ref", "source")))
        items = [free_text_demand("pd-batch")]
        items += [demand_body(**{field: value}) for field, _kind, value in cases]
        answer = accepted(await intake.post("/v1/demands:batch", json=items), 200)
        assert [r["status"] for r in answer["results"]] == ["accepted"] + ["rejected"] * len(cases)
        for result, (field, kind, _value) in zip(answer["results"][1:], cases, strict=True):
            assert result["errors"] == [{"field": field, "reason": REASONS[kind]}]
            assert result["id"] is None if field == "id" else result["id"] is not None

        # -- CloudEvents: structured, binary and batch ---------------------------------------
        def cloudevent(event_id: str) -> dict[str, Any]:
            data = free_text_demand(event_id)
            data.pop("id")
            data.pop("source")
            data.pop("occurred_at")
            return cloudevent_body(id=event_id, data=data, plantedext=plants.words())

        event = cloudevent("pd-ce-structured")
        event["subject"] = "account-change"
        accepted(await intake.post("/v1/demands", content=json.dumps(event), headers=CE_STRUCTURED))
        for field, kind, value in identifier_cases(("id", "source", "subject")):
            bad = cloudevent_body(**{field: value})
            response = await intake.post(
                "/v1/demands", content=json.dumps(bad), headers=CE_STRUCTURED
            )
            refused(response, (field, kind))
        for field, kind, value in identifier_cases(("customer_ref", "case_ref")):
            bad = cloudevent_body()
            bad["data"][field] = value
            response = await intake.post(
                "/v1/demands", content=json.dumps(bad), headers=CE_STRUCTURED
            )
            refused(response, (field, kind))

        binary = cloudevent("pd-ce-binary")
        accepted(await intake.post("/v1/demands", **_binary(binary)))
        for field, kind, value in identifier_cases(("id", "source", "subject")):
            response = await intake.post(
                "/v1/demands", **_binary(cloudevent_body(**{field: value}))
            )
            refused(response, (f"ce-{field}", kind))

        cases = list(identifier_cases(("id", "source", "subject")))
        batch = [cloudevent("pd-ce-batch")] + [cloudevent_body(**{f: v}) for f, _k, v in cases]
        answer = accepted(
            await intake.post("/v1/demands:batch", content=json.dumps(batch), headers=CE_BATCH),
            200,
        )
        assert answer["accepted"] == 1
        for result, (field, kind, _value) in zip(answer["results"][1:], cases, strict=True):
            assert result["errors"] == [{"field": field, "reason": REASONS[kind]}]

        # -- case events: nothing free, every field names something -------------------------
        opened = case_event_body(id="pd-case-1", customer_ref="C-pd-single", case_ref="K-pd-single")
        accepted(await intake.post("/v1/case-events", json=opened))
        for field, kind, value in identifier_cases(("id", "case_ref", "customer_ref", "source")):
            response = await intake.post("/v1/case-events", json=case_event_body(**{field: value}))
            refused(response, (field, kind))
        for purpose, kind in (
            (f"card {plants.card()}", "card"),
            (f"ring {plants.phone()}", "phone"),
        ):
            response = await intake.post("/v1/case-events", json=case_event_body(purpose=purpose))
            refused(response, ("purpose", kind))

        # -- labels: the note and text are free, the rest names something -------------------
        label = label_body(id="pd-label-1", note=plants.words(), text=plants.words())
        accepted(await intake.post("/v1/demands/pd-single/labels", json=label))
        for field, kind, value in identifier_cases(("id", "labelled_by")):
            response = await intake.post(
                "/v1/demands/pd-single/labels", json=label_body(**{field: value})
            )
            refused(response, (field, kind))
        for field in ("purpose", "failure_kind"):
            body = label_body(demand_type="failure", **{field: f"ring {plants.phone()}"})
            response = await intake.post("/v1/demands/pd-single/labels", json=body)
            refused(response, (field, "phone"))
        for kind in KINDS:
            response = await intake.post(
                f"/v1/demands/{plants.compact(kind)}/labels", json=label_body()
            )
            refused(response, ("demand_id", kind))

        # -- the CSV import, through `demandscope import` -------------------------------------
        csv_file = tmp_path / "input" / "history.csv"
        csv_file.parent.mkdir()
        rows = [free_text_demand("pd-import")]
        cases = list(identifier_cases(("id", "customer_ref", "case_ref")))
        rows += [demand_body(source=..., **{field: value}) for field, _kind, value in cases]
        _write_csv(csv_file, rows)
        monkeypatch.setenv("DEMANDSCOPE_INTAKE_DATABASE_URL", urls["intake"])
        monkeypatch.setenv("DEMANDSCOPE_KAFKA_BOOTSTRAP_SERVERS", kafka_settings.bootstrap_servers)
        monkeypatch.setenv("DEMANDSCOPE_KAFKA_TOPIC_PREFIX", kafka_settings.topic_prefix)
        imported = await asyncio.to_thread(
            CliRunner().invoke, cli, ["import", str(csv_file), "--source", "demo"]
        )
        answers.append(imported.output)
        assert imported.exit_code == 0, imported.output
        assert f"1 accepted, 0 duplicates, {len(cases)} rejected" in imported.output
        rejected_rows = (tmp_path / "input" / "history.csv.rejected.jsonl").read_text()
        filed = [json.loads(line)["errors"] for line in rejected_rows.splitlines()]
        assert filed == [[{"field": f, "reason": REASONS[k]}] for f, k, _v in cases]

        # -- a change note through the metrics API -------------------------------------------
        change = {"changed_at": "2026-03-01T00:00:00Z", "note": plants.words()}
        note = accepted(
            await metrics.post("/v1/purposes/repairs/changes", json=change, headers=org), 201
        )
        assert note["note"] == "card [card], write to [email] or ring [phone]"
        for kind in KINDS:
            response = await metrics.post(
                f"/v1/purposes/{plants.compact(kind)}/changes", json=change, headers=org
            )
            refused(response, ("path.purpose", kind))

        # -- everything accepted is counted --------------------------------------------------
        await wait_until(
            lambda: _volume(metrics),
            accept=lambda volume: volume == len(demand_ids),
            timeout=90,
            what=f"the {len(demand_ids)} accepted demands counted",
        )
        for group, inputs in (
            (f"{unique_group}-classifier", CLASSIFIER_INPUTS),
            (f"{unique_group}-metrics", METRICS_INPUTS),
        ):
            topics = [topic_name(kafka_settings, topic) for topic in inputs]
            await wait_until(
                partial(committed_to_end, kafka_settings, group, topics),
                timeout=60,
                what=f"{group} through its inputs",
            )
        answers += [(await client.get("/metrics")).text for client in (intake, classifier, metrics)]

    # -- the search ---------------------------------------------------------------------------
    assert len(plants.needles) > 300  # what is searched for: every form of every planted value
    published = await _every_record(kafka_settings)
    assert {
        json.loads(r.value)["id"] for r in published if r.topic.endswith("demand.received")
    } == set(demand_ids)
    leaks = {
        "topics": [
            (record.topic, found)
            for record in published
            if (found := plants.found_in(_record_bytes(record)))
        ],
        "databases": {
            name: found
            for name, url in urls.items()
            if (found := plants.found_in(await _dump(url)))
        },
        "answers": [found for answer in answers if (found := plants.found_in(answer))],
        "logs": [
            (record.name, record.levelname, found)
            for record in caplog.records
            # httpx is this test's client (no service uses it): it logs each URL it posts to,
            # refused paths included. The services log no request line (no access log).
            if record.name != "httpx"
            if (found := plants.found_in(caplog.handler.format(record)))
        ],
        "files": await asyncio.to_thread(_files_holding, plants, tmp_path, csv_file),
    }
    assert leaks == {"topics": [], "databases": {}, "answers": [], "logs": [], "files": {}}
    # And the search would have found them: the masked words are there, the planted input too.
    assert plants.found_in(await asyncio.to_thread(csv_file.read_bytes))
    demands = [json.loads(r.value) for r in published if r.topic.endswith("demand.received")]
    assert {d["redactions"] == ["card", "email", "phone"] for d in demands} == {True}
    assert any(record.levelno == logging.DEBUG for record in caplog.records)


DATABASES = {
    "auth": upgrade_auth,
    "intake": upgrade_intake,
    "classifier": upgrade_classifier,
    "metrics": upgrade_metrics,
}
# Inputs whose end a group's committed offsets reach once it has handled everything on them.
# demand.classified is written in transactions: its end lies past a commit marker that no
# consumer commits beyond, so metrics' progress there is read from the volume it counts.
CLASSIFIER_INPUTS = (Topic.DEMAND_RECEIVED, Topic.CASE_EVENTS, Topic.DEMAND_LABELS)
METRICS_INPUTS = (Topic.CASE_EVENTS, Topic.DEMAND_LABELS)


def _binary(event: dict[str, Any]) -> dict[str, Any]:
    """A CloudEvent in binary mode: attributes as ce-* headers, the data as the body."""
    headers = {f"ce-{name}": str(value) for name, value in event.items() if name != "data"}
    return {
        "content": json.dumps(event["data"]),
        "headers": {"Content-Type": "application/json", **headers},
    }


def _write_csv(path: Path, rows: list[dict[str, Any]]) -> None:
    columns = ["id", "occurred_at", "channel", "customer_ref", "case_ref", "text"]
    columns += ["reason_code", "team"]
    attributes = sorted({name for row in rows for name in row.get("attributes", {})})
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(columns + [f"attr.{name}" for name in attributes])
        for row in rows:
            values = [row.get(column, "") for column in columns]
            writer.writerow(values + [row.get("attributes", {}).get(n, "") for n in attributes])


async def _every_record(settings: KafkaSettings) -> list[Any]:
    """Every record of every demandscope topic and dead-letter topic, aborted ones too."""
    names = [spec.name for spec in topic_specs(settings)]
    assert {topic_name(settings, topic) for topic in Topic} <= set(names)
    assert any(name.endswith(".dlq") for name in names)
    return await read_all(settings, names, timeout=60, isolation_level="read_uncommitted")


def _files_holding(plants: Plants, folder: Path, written_by_the_test: Path) -> dict[str, list[str]]:
    """Every file under ``folder`` the system wrote, with the planted values it holds."""
    return {
        str(path.relative_to(folder)): found
        for path in sorted(folder.rglob("*"))
        if path.is_file() and path != written_by_the_test
        if (found := plants.found_in(path.read_bytes()))
    }


def _record_bytes(record: Any) -> bytes:
    parts = [record.key or b"", record.value or b""]
    parts += [name.encode() + b"=" + (value or b"") for name, value in record.headers]
    return b"\n".join(parts)


async def _dump(url: str) -> str:
    """Every row of every table, as text."""
    engine = create_engine(url)
    try:
        async with engine.connect() as connection:
            tables = await connection.run_sync(lambda sync: inspect(sync).get_table_names())
            assert tables, url
            dumped = []
            for table in tables:
                rows = (await connection.execute(text(f'SELECT * FROM "{table}"'))).all()
                dumped.append(f"{table}: {rows!r}")
    finally:
        await engine.dispose()
    return "\n".join(dumped)


async def _ready(client: httpx.AsyncClient) -> bool:
    return (await client.get("/readyz")).status_code == 200


async def _volume(client: httpx.AsyncClient) -> int:
    response = await client.get("/v1/purposes")
    assert response.status_code == 200, response.text
    return sum(row["volume"] for row in response.json())
