"""One home for workflow paths (matfuse.workflow.Plan): rule all from the config, every rule's
resources from the config, cross-references in the typed config, and the docs' commands resolve."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from pydantic import ValidationError

from conftest import REPO
from matfuse.config import load_config
from matfuse.workflow import Plan

SNAKEMAKE = str(Path(sys.executable).with_name("snakemake"))


def _config(name: str) -> dict:
    return yaml.safe_load((REPO / name).read_text())


def _dry_run(args: list[str], cwd: Path = REPO) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.run([SNAKEMAKE, "-s", str(REPO / "Snakefile"), *args, "-n", "--nolock"], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)


def test_rule_all_is_built_from_the_config():
    assert Plan(load_config(_config("config/tiny.yaml"))).final_targets() == ["results/metrics.csv", "results/tables/all.md"]
    assert Plan(load_config(_config("config/ecd_tiny.yaml"))).final_targets() == [
        "results/metrics.csv", "results/tables/massa_table6.md"]
    proc = _dry_run(["--configfile", "config/ecd_tiny.yaml"])  # no target: rule all
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "density_table6" in proc.stdout and "density_train" in proc.stdout


def test_no_rule_hard_codes_its_resources():
    for smk in (REPO / "workflow/rules").glob("*.smk"):
        for n, line in enumerate(smk.read_text().splitlines(), 1):
            assert not re.match(r"\s*(mem_mb|runtime|gpu)\s*=\s*\d", line), f"{smk.name}:{n}: {line.strip()}"
            assert not re.match(r"\s*threads:\s*\d", line), f"{smk.name}:{n}: {line.strip()}"


def test_every_rules_resources_come_from_the_config(tmp_path):
    cfg = _config("config/tiny.yaml")
    cfg["resources"] = {"ingest": {"mem_mb": 1234, "runtime_min": 7}, "metrics": {"mem_mb": 777}, "train_mem_mb": 5555}
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(cfg))
    plan = Plan(load_config(cfg))
    assert plan.res("ingest").mem_mb == 1234 and plan.res("train").mem_mb == 5555 and plan.res("predict").mem_mb == 5555
    assert plan.res("predict").runtime_min == 30 and plan.res("embed").threads == 2
    with pytest.raises(KeyError):
        plan.res("no_such_rule")
    proc = _dry_run(["results/metrics.csv", "--cores", "2", "--configfile", str(tmp_path / "c.yaml")], cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout
    ingest = out[out.index("rule ingest:"):][:1500]
    assert "mem_mb=1234" in ingest and "runtime=7" in ingest
    train = out[out.index("rule train:"):][:1500]
    assert "mem_mb=5555" in train


def test_density_cross_references_live_in_the_typed_config():
    cfg = _config("config/ecd_tiny.yaml")
    load_config(cfg)
    bad = yaml.safe_load(yaml.safe_dump(cfg))
    bad["density"]["datasets"]["nowhere"] = {"kind": "local", "manifest": "m.csv"}
    with pytest.raises(ValidationError, match="density.datasets names 'nowhere'"):
        load_config(bad)
    bad = yaml.safe_load(yaml.safe_dump(cfg))
    bad["density"]["datasets"]["atomate"]["manifest"] = "elsewhere.csv"
    with pytest.raises(ValidationError, match="manifest must be results/density/atomate/match/manifest.csv"):
        load_config(bad)


def test_removed_text_variants_setting_is_ignored_with_a_warning():
    cfg = _config("config/tiny.yaml")
    cfg["text"]["variants"] = ["all"]
    with pytest.warns(FutureWarning, match="text.variants is ignored"):
        loaded = load_config(cfg)
    assert "variants" not in loaded.text.model_dump()


# --------------------------------------------------------------------------- the docs' commands
#: Configs whose encoders need a Hugging Face cache this machine does not have: the command must
#: then stop at once saying so (that is the documented behaviour), not fail in some other way.
NEEDS_HUB = {"config/paper.yaml", "config/ecd_paper.yaml"}


def doc_commands() -> list[list[str]]:
    """Every `snakemake ...` command of README.md and docs/*.md (placeholders left out), deduplicated."""
    found: dict[tuple[str, ...], list[str]] = {}
    for doc in [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]:
        text = re.sub(r"\\\n\s*", " ", doc.read_text())  # shell line continuations: one command
        for line in text.splitlines():
            for m in re.finditer(r"(?:^|`|\s)((?:PYTHONHASHSEED=0 )?(?:\.venv/bin/)?snakemake [^`#\n]*)", line):
                if "#" in line[: m.start()]:
                    continue  # inside a shell comment
                cmd = m.group(1).split(" (")[0].strip().rstrip(".;,")
                if any(p in cmd for p in ("X.yaml", "FILE", "…", "...", "--unlock", "--cleanup-metadata", "--lint")):
                    continue
                args = shlex.split(cmd)
                args = [a for a in args if not a.startswith("PYTHONHASHSEED=")][1:]
                args = [a for a in args if a not in ("-n", "--verbose")]
                if "--report" in args:  # needs a finished run
                    i = args.index("--report")
                    del args[i : i + 2]
                found.setdefault(tuple(args), args)
    return list(found.values())


def test_docs_have_commands():
    cmds = doc_commands()
    assert len(cmds) >= 6 and any("config/tiny.yaml" in c for c in cmds)


@pytest.mark.parametrize("args", doc_commands(), ids=lambda a: " ".join(a)[:80])
def test_docs_commands_resolve(args):
    proc = _dry_run(args)
    config = next((args[i + 1] for i, a in enumerate(args) if a == "--configfile"), "config.yaml")
    if config in NEEDS_HUB:
        out = proc.stdout + proc.stderr
        assert proc.returncode != 0 and "text encoder not available" in out, out[-2000:]
    else:
        assert proc.returncode == 0, proc.stderr[-3000:]
        assert "This was a dry-run" in proc.stdout
