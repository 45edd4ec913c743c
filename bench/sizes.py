"""Built sizes from the build `make build` makes (sam build, then bytecode): each artefact, unzipped and zipped."""

from __future__ import annotations

import os
import subprocess
import zipfile
from pathlib import Path
from typing import Any

from tests.support import ROOT

SAM = ROOT / ".venv-tools" / "bin" / "sam"
SAM_BUILD = ROOT / "scripts" / "sam-build"
#: sam looks for python3.13 on PATH to build for the python3.13 runtime; the project's virtualenv has one.
VENV_BIN = ROOT / ".venv" / "bin"


def measure_sizes(build_dir: Path) -> dict[str, Any]:
    """Build into `build_dir` and measure every artefact; a reason instead when the toolchain is missing."""
    if not SAM.exists():
        return {"skipped": "no .venv-tools/bin/sam (run `make test` once to install it)"}
    if not (VENV_BIN / "python3.13").exists():
        return {"skipped": "no python3.13: sam cannot build for the python3.13 runtime"}
    env = {**os.environ, "SAM_CLI_TELEMETRY": "0", "AWS_DEFAULT_REGION": "eu-west-1",
           "PATH": f"{VENV_BIN}:{SAM.parent}:{os.environ.get('PATH', '')}"}
    done = subprocess.run([str(SAM_BUILD), "--build-dir", str(build_dir), "--template", "template.yaml"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=900, check=False)
    if done.returncode != 0:
        return {"error": (done.stdout + done.stderr)[-1500:]}
    return {artefact.name: measure(artefact) for artefact in sorted(build_dir.iterdir()) if artefact.is_dir()}


def measure(folder: Path) -> dict[str, Any]:
    """Unzipped and zipped bytes (Lambda's limits: 250 MB unzipped with layers), files, compiled files."""
    files = [f for f in folder.rglob("*") if f.is_file()]
    archive = folder.with_suffix(".zip")
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zf:
        for f in files:
            zf.write(f, f.relative_to(folder))
    zipped = archive.stat().st_size
    archive.unlink()
    return {"unzipped_kb": round(sum(f.stat().st_size for f in files) / 1e3, 1), "zipped_kb": round(zipped / 1e3, 1),
            "files": len(files), "python_files": sum(f.suffix == ".py" for f in files),
            "bytecode_files": sum(f.suffix == ".pyc" for f in files)}
