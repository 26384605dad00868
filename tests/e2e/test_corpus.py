"""Real-world task definitions register and read back unchanged.

The corpus (`<repo>/../shared/corpus/ecs-taskdefs/*.json`, 113 task definitions
written for Amazon ECS by others) is registered through boto3
(`register_task_definition(**json)`), and `describe_task_definition` must return
every field that was sent, unchanged (server defaults may be added): a deep
subset comparison that reports the path of the first differences. A handful go
through the AWS CLI (`--cli-input-json file://...`) too.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

import harness

CORPUS = harness.REPO.parent / "shared" / "corpus" / "ecs-taskdefs"
FILES = sorted(CORPUS.glob("*.json"))
# A spread of shapes for the CLI: volumes, placement constraints, fargate, pid/ipc modes.
CLI_SAMPLES = 6


def subset_diffs(sent: Any, got: Any, path: str = "") -> list[str]:
    """Paths where `got` does not contain `sent` unchanged (dict keys may be added)."""
    where = path or "<root>"
    if isinstance(sent, dict):
        if not isinstance(got, dict):
            return [f"{where}: sent an object, got {type(got).__name__} {got!r}"]
        diffs = []
        for key, value in sent.items():
            sub = f"{path}.{key}" if path else key
            if key not in got:
                diffs.append(f"{sub}: sent {value!r}, missing from the response")
            else:
                diffs.extend(subset_diffs(value, got[key], sub))
        return diffs
    if isinstance(sent, list):
        if not isinstance(got, list):
            return [f"{where}: sent a list, got {type(got).__name__} {got!r}"]
        if len(sent) != len(got):
            return [f"{where}: sent {len(sent)} items, got {len(got)}: {got!r}"]
        diffs = []
        for i, (s, g) in enumerate(zip(sent, got)):
            diffs.extend(subset_diffs(s, g, f"{path}[{i}]"))
        return diffs
    if type(sent) is not type(got) or sent != got:
        return [f"{where}: sent {sent!r}, got {got!r}"]
    return []


def test_subset_diffs_reports_paths():
    """The comparison itself: input/expected table."""
    cases = [
        ({"a": 1}, {"a": 1, "b": 2}, []),
        ({"a": 1}, {"a": 2}, ["a: sent 1, got 2"]),
        ({"a": [{"b": 1}]}, {"a": [{"b": 1, "c": 0}]}, []),
        ({"a": [{"b": 1}]}, {"a": [{"b": "1"}]}, ["a[0].b: sent 1, got '1'"]),
        ({"a": [1, 2]}, {"a": [2, 1]}, ["a[0]: sent 1, got 2", "a[1]: sent 2, got 1"]),
        ({"a": [1]}, {"a": []}, ["a: sent 1 items, got 0: []"]),
        ({"a": {"x": True}}, {}, ["a: sent {'x': True}, missing from the response"]),
        ({"a": True}, {"a": 1}, ["a: sent True, got 1"]),
    ]
    for sent, got, expected in cases:
        assert subset_diffs(sent, got) == expected, (sent, got)


@pytest.fixture(scope="module")
def coord(tmp_path_factory):
    c = harness.Coordinator(tmp_path_factory.mktemp("corpus"))
    yield c
    c.close()


def check_roundtrip(sent: dict, described: dict, tags: list | None) -> list[str]:
    sent = dict(sent)
    sent_tags = sent.pop("tags", None)
    diffs = subset_diffs(sent, described)
    if sent_tags is not None:
        diffs.extend(subset_diffs(sent_tags, tags or [], "tags"))
    return diffs


def test_corpus_is_complete():
    assert len(FILES) == 113, f"expected 113 task definitions in {CORPUS}, found {len(FILES)}"


@pytest.mark.parametrize("path", FILES, ids=[p.stem for p in FILES])
def test_register_and_describe_boto3(coord, path: Path):
    sent = json.loads(path.read_text())
    ecs = coord.ecs()
    out = ecs.register_task_definition(**sent)
    td = out["taskDefinition"]
    assert td["family"] == sent["family"]
    assert td["revision"] >= 1
    assert td["status"] == "ACTIVE"
    diffs = check_roundtrip(sent, td, out.get("tags"))
    assert not diffs, f"{path.name}: RegisterTaskDefinition response differs:\n" + "\n".join(diffs)

    got = ecs.describe_task_definition(taskDefinition=td["taskDefinitionArn"], include=["TAGS"])
    assert got["taskDefinition"]["taskDefinitionArn"] == td["taskDefinitionArn"]
    diffs = check_roundtrip(sent, got["taskDefinition"], got.get("tags"))
    assert not diffs, f"{path.name}: DescribeTaskDefinition differs from what was sent:\n" + "\n".join(diffs)


def cli_samples() -> list[Path]:
    step = max(1, len(FILES) // CLI_SAMPLES)
    return FILES[::step][:CLI_SAMPLES]


@pytest.mark.parametrize("path", cli_samples(), ids=[p.stem for p in cli_samples()])
def test_register_and_describe_aws_cli(coord, path: Path):
    sent = json.loads(path.read_text())
    out = coord.aws("ecs", "register-task-definition", "--cli-input-json", f"file://{path}")
    arn = out["taskDefinition"]["taskDefinitionArn"]
    got = coord.aws("ecs", "describe-task-definition", "--task-definition", arn, "--include", "TAGS")
    diffs = check_roundtrip(sent, got["taskDefinition"], got.get("tags"))
    assert not diffs, f"{path.name} via the AWS CLI:\n" + "\n".join(diffs)
    # The CLI's view and boto3's agree.
    boto = coord.ecs().describe_task_definition(taskDefinition=arn)["taskDefinition"]
    assert boto["containerDefinitions"] == got["taskDefinition"]["containerDefinitions"]
