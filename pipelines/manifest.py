"""Stage bookkeeping: the run manifest, freshness checks and atomic artifacts.

Each stage owns `<work_dir>/<stage>/`. It is written under a temporary name
and renamed into place only when the stage succeeds, and only then is the
manifest entry marked complete; a failed stage therefore never leaves an
artifact that a later run would trust. A stage is *fresh* (skipped on re-run)
when its entry is complete, its artifact exists, and its fingerprint (its
config section plus the fingerprints of the stages it reads) is unchanged.
"""
from __future__ import annotations

import contextlib
import datetime
import hashlib
import json
import os
import shutil
import subprocess
import time
from typing import Any, Iterator

MANIFEST = "manifest.json"


def fingerprint(config: Any, upstream: list[str]) -> str:
    """Stable hash of a stage's config and its inputs' fingerprints."""
    payload = json.dumps({"config": config, "upstream": upstream}, sort_keys=True, default=str)
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def code_version() -> str:
    """The git commit of the code (with '+dirty'), or the package version."""
    here = os.path.dirname(os.path.abspath(__file__))
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=here, capture_output=True,
                                text=True, timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=here,
                               capture_output=True, text=True, timeout=10).stdout.strip()
        return commit + ("+dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        import gpt_keras
        return f"gpt_keras-{gpt_keras.__version__}"


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


class Manifest:
    """`<work_dir>/manifest.json`: one entry per stage."""

    def __init__(self, work_dir: str):
        self.work_dir = work_dir
        self.path = os.path.join(work_dir, MANIFEST)
        self.entries: dict[str, dict] = {}
        if os.path.exists(self.path):
            with open(self.path) as f:
                self.entries = json.load(f).get("stages", {})

    def artifact_dir(self, stage: str) -> str:
        return os.path.join(self.work_dir, stage)

    def is_fresh(self, stage: str, stage_fingerprint: str) -> bool:
        entry = self.entries.get(stage)
        return bool(entry and entry.get("status") == "complete"
                    and entry.get("fingerprint") == stage_fingerprint
                    and os.path.isdir(self.artifact_dir(stage)))

    def save(self) -> None:
        os.makedirs(self.work_dir, exist_ok=True)
        tmp = self.path + ".tmp"
        with open(tmp, "w") as f:
            json.dump({"stages": self.entries}, f, indent=2, sort_keys=True, default=str)
        os.replace(tmp, self.path)

    @contextlib.contextmanager
    def stage(self, stage: str, stage_fingerprint: str, config: Any, inputs: dict) -> Iterator[tuple[str, dict]]:
        """Run a stage atomically: yields (temporary artifact dir, entry to fill with
        `outputs`/`metrics`); on success the dir is renamed into place."""
        final = self.artifact_dir(stage)
        tmp = final + ".incomplete"
        shutil.rmtree(tmp, ignore_errors=True)
        os.makedirs(tmp)
        started = time.time()
        entry = {"status": "running", "fingerprint": stage_fingerprint, "config": config, "inputs": inputs,
                 "outputs": {}, "metrics": {}, "start": _now(), "code_version": code_version()}
        self.entries[stage] = entry
        self.save()
        try:
            yield tmp, entry
        except BaseException as e:
            entry.update(status="failed", end=_now(), error=f"{type(e).__name__}: {e}")
            self.save()
            raise
        shutil.rmtree(final, ignore_errors=True)
        os.replace(tmp, final)
        # Outputs name paths inside the temporary dir: point them at the final one.
        entry["outputs"] = json.loads(json.dumps(entry["outputs"]).replace(tmp, final))
        entry.update(status="complete", end=_now(), seconds=round(time.time() - started, 1))
        with open(os.path.join(final, "stage.json"), "w") as f:
            json.dump({"stage": stage, **entry}, f, indent=2, sort_keys=True, default=str)
        self.save()
