"""Which JIT each local broker runs: the tests' brokers C1 only (cheaper to start), `make run`'s
and `bench stack`'s the full tiered JIT a production broker runs."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.stack import broker_config
from devstack import kafka
from devstack.cli import local_config


def test_a_test_broker_runs_c1_only(tmp_path: Path) -> None:
    cfg = kafka.LocalKafkaConfig.on_free_ports(root=tmp_path, run_dir=tmp_path / "kafka")
    assert kafka.C1_ONLY in cfg.jvm_opts
    assert kafka.C1_ONLY in kafka.LocalKafkaConfig(root=tmp_path).jvm_opts


def test_make_run_and_bench_stack_run_the_full_jit_with_the_same_settings(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    made_run = local_config()
    assert not any(option.startswith("-XX:TieredStopAtLevel") for option in made_run.jvm_opts)
    assert broker_config(tmp_path).jvm_opts == made_run.jvm_opts
    # Otherwise the same JVM as the tests' broker.
    assert set(kafka.TEST_JVM_OPTS) - set(made_run.jvm_opts) == {kafka.C1_ONLY}
