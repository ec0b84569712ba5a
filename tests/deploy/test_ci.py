"""The CI workflows (.github/workflows) point at things that exist: `.ci/run`, every test file in
some per-service matrix entry, every Dockerfile in the image matrix, the smoke script, and a GPU
workflow that is manual, on a self-hosted GPU runner, running the GPU tests and bench/musicgen.py."""

from __future__ import annotations

import os
import re
import shlex

import pytest
import yaml
from deploy_support import DOCKERFILES, REPO, cli_group, parse_cli, resolve_command

WORKFLOWS = REPO / ".github" / "workflows"
#: test folders that need more than a Python venv (a browser) and run in the whole-suite job only
SUITE_ONLY = {"tests/browser"}


def workflow(name: str) -> dict:
    data = yaml.safe_load((WORKFLOWS / name).read_text())
    # YAML 1.1 reads the `on:` key as True
    data["on"] = data.pop(True, data.get("on"))
    return data


def run_lines(job: dict) -> list[str]:
    return [step["run"] for step in job["steps"] if "run" in step]


def test_ci_runs_the_one_ci_command() -> None:
    ci = workflow("ci.yml")
    assert ".ci/run" in run_lines(ci["jobs"]["suite"])
    assert os.access(REPO / ".ci" / "run", os.X_OK)
    lint = " ".join(run_lines(ci["jobs"]["lint"]))
    assert "ruff check" in lint and "ruff format --check" in lint and "mypy" in lint


def test_pyproject_reads_without_setuptools_warnings() -> None:
    """setuptools reads pyproject.toml once per build and printed a deprecation warning for the old
    `license = { text = ... }` table (three times per install): the licence is an SPDX string."""
    import warnings

    from setuptools.config.pyprojecttoml import apply_configuration
    from setuptools.dist import Distribution

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        dist = apply_configuration(Distribution(), REPO / "pyproject.toml")
    assert [str(w.message).splitlines()[0] for w in caught] == []
    assert dist.metadata.license_expression == "Apache-2.0"


def test_every_image_is_built_and_smoke_tested() -> None:
    jobs = workflow("ci.yml")["jobs"]
    built = {e["dockerfile"] for e in jobs["image"]["strategy"]["matrix"]["include"]}
    assert built == {p for paths in DOCKERFILES.values() for p in paths}
    assert any("clean_services/smoke.sh" in line for line in run_lines(jobs["smoke"]))


def test_gpu_workflow_is_manual_on_a_gpu_runner() -> None:
    gpu = workflow("gpu.yml")
    assert set(gpu["on"]) == {"workflow_dispatch"}
    job = gpu["jobs"]["gpu"]
    assert "self-hosted" in job["runs-on"] and "gpu" in job["runs-on"]
    lines = " ".join(run_lines(job))
    assert "-m gpu" in lines and "bench/musicgen.py" in lines
    assert (REPO / "bench" / "musicgen.py").is_file()


DOCS = ["MIGRATION.md", "clean_services/README.md", "deploy/k8s/README.md", *(
    f"containers/{service}/README.md" for service in DOCKERFILES
)]  # fmt: skip
COMMAND_IN_TEXT = re.compile(r"(?:^|`|\$ |&& )(?:\.venv/bin/)?harmonia ((?:[^`&|#\n])+)")


def documented_commands(text: str) -> list[list[str]]:
    """`harmonia ...` command lines quoted in a document, with <placeholders> filled in."""
    out = []
    for match in COMMAND_IN_TEXT.finditer(text):
        line = re.sub(r"<[^>]+>", "x", match.group(1)).strip().rstrip("\\").strip()
        argv = shlex.split(line)
        if argv and argv[0] != "x":  # `harmonia <command>` is prose, not a command line
            out.append(argv)
    return out


@pytest.mark.parametrize("doc", DOCS)
def test_documented_commands_parse(doc: str) -> None:
    commands = documented_commands((REPO / doc).read_text())
    assert commands, f"{doc} quotes no harmonia command"
    pending = [argv for argv in commands if argv[0] == "legacy" and "legacy" not in cli_group().commands]
    for argv in commands:
        if argv in pending:
            continue
        if any(a.startswith("-") for a in argv) or len(argv) > 2:
            parse_cli(argv)  # a full command line: its options must parse
        else:
            resolve_command(argv)  # a command named in prose: it must exist
    if pending:
        pytest.skip(f"`harmonia legacy` is not registered in harmonia.cli yet: {pending}")


USER_DOCS = sorted(
    {"README.md", "RELEASE_NOTES.md", *DOCS}
    | {str(p.relative_to(REPO)) for p in (REPO / "docs").glob("*.md")}
    | {str(p.relative_to(REPO)) for p in (REPO / "containers").glob("*/README.md")}
)


@pytest.mark.parametrize("doc", USER_DOCS)
def test_docs_point_only_at_files_in_the_repository(doc: str) -> None:
    """Users have the repository, not the steering folder beside it (README once pointed to
    ../shared/ARCHITECTURE.md): every path a document names in backquotes or a link exists."""
    text = (REPO / doc).read_text()
    assert "../shared" not in text, doc
    # reference lists cite other projects' files (openvpi's `docs/BestPractices.md`)
    text = "\n".join(ln for ln in text.splitlines() if not ln.lstrip().startswith("- ["))
    named = re.findall(r"\]\(([^)#:]+)\)", text) + re.findall(
        r"`((?:docs|legacy|containers)/[\w./-]+|[A-Z_]+\.md)`", text
    )
    missing = [p for p in named if not (REPO / p).exists() and not ((REPO / doc).parent / p).exists()]
    assert not missing, f"{doc} names files that are not in the repository: {missing}"


@pytest.mark.parametrize("doc", USER_DOCS)
def test_curl_examples_fail_on_http_errors(doc: str) -> None:
    """`curl -o out.wav` without --fail writes a 503's JSON body into out.wav and exits 0."""
    lines = [
        ln
        for ln in (REPO / doc).read_text().splitlines()
        if re.search(r"(^|`|\$ |; )curl (-|localhost|http)", ln)
    ]
    loose = [ln.strip() for ln in lines if not re.search(r"curl (--fail|-f\w*)\b", ln)]
    assert not loose, f"{doc}: curl without --fail: {loose}"
