"""Cold starts: fresh interpreters that import each handler, against a bare interpreter, interleaved."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from bench.fixtures import FUNCTIONS
from bench.stats import interleave, median, ms
from tests.support import ROOT

PYTHON = sys.executable
#: Packages the Lambda Python runtime brings itself; the layer does not ship them (shared/requirements.txt).
RUNTIME_PROVIDED = frozenset({"boto3", "botocore", "s3transfer", "urllib3", "dateutil", "six"})
SQS_QUEUE_URL = "https://sqs.eu-west-1.amazonaws.com/123456789012/dashgate-mail"
BOTO3_CLIENT = "import boto3; boto3.client('secretsmanager', region_name='eu-west-1')"


def import_code(name: str, layer: Path) -> str:
    """`python -c` code that imports a handler the way Lambda does: its folder, then the layer."""
    return f"import sys; sys.path[0:0] = [{str(layer.parent / 'functions' / name)!r}, {str(layer)!r}]; import app"


def timed_run(argv: list[str], env: dict[str, str]) -> float:
    """Wall time of one fresh process, in milliseconds."""
    started = time.perf_counter_ns()
    done = subprocess.run(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                          timeout=120, check=False)
    elapsed = ms(time.perf_counter_ns() - started)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(argv[:3])}... failed:\n{done.stderr[-2000:]}")
    return elapsed


def bytecode_free_copy(env: dict[str, str], workdir: Path) -> Path:
    """A copy of the layer's packages and the functions without __pycache__, as `sam build` ships them."""
    layer = workdir / "layer"
    site = Path(sysconfig.get_paths()["purelib"])
    tops = set()
    for name in FUNCTIONS:
        probe = (f"{import_code(name, ROOT / 'shared')}; import json; "
                 "print(json.dumps([getattr(m, '__file__', None) or '' for m in list(sys.modules.values())]))")
        files = json.loads(subprocess.run([PYTHON, "-c", probe], env=env, capture_output=True, text=True,
                                          check=True, timeout=120).stdout)
        tops |= {Path(f).relative_to(site).parts[0] for f in files if f.startswith(str(site))}
    for top in sorted(tops):
        stem = top.split(".")[0].lower()
        if stem in RUNTIME_PROVIDED:
            continue
        for entry in site.iterdir():  # the package, its dist-info (read by psycopg_binary) and its .libs
            if entry.name.lower().startswith(stem):
                _copy(entry, layer / entry.name)
    _copy(ROOT / "shared" / "dashgate", layer / "dashgate")
    for name in FUNCTIONS:
        _copy(ROOT / "functions" / name, workdir / "functions" / name)
    return layer


def _copy(source: Path, target: Path) -> None:
    if target.exists():
        return
    if source.is_dir():
        shutil.copytree(source, target, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    else:
        shutil.copy2(source, target)


def measure_imports(env: dict[str, str], runs: int, with_boto3: bool, baseline: str | None,
                    instructions: bool) -> tuple[dict[str, list[float]], dict[str, int]]:
    """Process wall times (ms): bare, each handler (also without bytecode, and at `baseline`), boto3's
    client; and, with `instructions`, what callgrind counts for the imports with bytecode (count_instructions)."""
    with tempfile.TemporaryDirectory(prefix="dashgate-bench-") as tmp:
        layer = bytecode_free_copy(env, Path(tmp))
        before = extract(baseline, Path(tmp)) if baseline else None
        items: dict[str, list[str]] = {"bare": [PYTHON, "-c", "pass"]}
        for name in FUNCTIONS:
            items[name] = [PYTHON, "-c", import_code(name, ROOT / "shared")]
            # -B: nothing may write the cache, as on Lambda's read-only /opt and /var/task.
            items[f"{name} (no bytecode)"] = [PYTHON, "-B", "-c", import_code(name, layer)]
            if before and (before.parent / "functions" / name / "app.py").exists():
                items[f"{name} @ baseline"] = [PYTHON, "-c", import_code(name, before)]
        # In AWS the functions that send mail have MAIL_QUEUE_URL, and load the SQS client at init.
        items["forgot (SQS queue)"] = [PYTHON, "-c", f"import os; os.environ['MAIL_QUEUE_URL'] = {SQS_QUEUE_URL!r}; "
                                                     + import_code("forgot", ROOT / "shared")]
        if with_boto3:
            items["boto3 + Secrets Manager client"] = [PYTHON, "-c", BOTO3_CLIENT]
        for argv in items.values():  # once unmeasured: fills the bytecode caches, and the page cache
            timed_run(argv, env)
        times = interleave({key: (lambda argv=argv: timed_run(argv, env)) for key, argv in items.items()}, runs)
        counted = {key: argv for key, argv in items.items() if "no bytecode" not in key and "boto3" not in key}
        return times, count_instructions(counted, env) if instructions else {}


def count_instructions(items: dict[str, list[str]], env: dict[str, str]) -> dict[str, int]:
    """Instructions each command executes, counted by valgrind's callgrind ({} without valgrind).

    Unlike milliseconds, the count does not depend on the machine's speed or load: the same code, Python
    and packages give the same count (within 0.1 %) on any x86_64 machine. So it is what the import
    budget is held to (report.REFERENCE_MS_PER_M_INSTRUCTIONS converts it)."""
    valgrind = shutil.which("valgrind")
    if valgrind is None:
        return {}

    def count(argv: list[str]) -> int:
        done = subprocess.run([valgrind, "--tool=callgrind", "--callgrind-out-file=/dev/null", *argv], env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, timeout=600, check=False)
        found = re.search(r"Collected : (\d+)", done.stderr)
        if done.returncode != 0 or found is None:
            raise RuntimeError(f"callgrind {' '.join(argv[:3])}... failed:\n{done.stderr[-2000:]}")
        return int(found.group(1))

    with ThreadPoolExecutor(max_workers=2) as pool:  # counts do not depend on load: run two at a time
        return dict(zip(items, pool.map(count, items.values()), strict=True))


def extract(ref: str, workdir: Path) -> Path:
    """The layer folder of `ref` (its functions/ and shared/, from `git archive`), for a before/after figure."""
    tree = workdir / "baseline"
    if not tree.exists():
        tree.mkdir()
        archive = subprocess.run(["git", "archive", ref, "functions", "shared"], cwd=ROOT, capture_output=True,
                                 check=True, timeout=60).stdout
        subprocess.run(["tar", "-x", "-C", str(tree)], input=archive, check=True, timeout=60)
    return tree / "shared"


def run_child(name: str, events: list[dict[str, Any]], env: dict[str, str]) -> dict[str, Any]:
    """One fresh process: import the handler, answer `events`, report timings and peak RSS."""
    with tempfile.TemporaryDirectory(prefix="dashgate-bench-") as tmp:
        events_path, result_path = Path(tmp) / "events.json", Path(tmp) / "result.json"
        events_path.write_text(json.dumps(events))
        argv = [PYTHON, str(ROOT / "bench" / "child.py"), name, str(ROOT), str(events_path), str(result_path)]
        timed_run(argv, env)
        return json.loads(result_path.read_text())


def measure_first_requests(env: dict[str, str], runs: int,
                           events_for: Callable[[str], list[dict[str, Any]]]) -> dict[str, list[dict[str, Any]]]:
    """Per function, `runs` fresh processes' first-request times, later-request times and peak RSS."""
    return interleave({name: (lambda name=name: run_child(name, events_for(name), env)) for name in FUNCTIONS}, runs)


def summarise(imports: dict[str, list[float]], children: dict[str, list[dict[str, Any]]],
              instructions: dict[str, int]) -> dict[str, Any]:
    """Medians per function: import beyond bare (with and without bytecode), first request, peak RSS; and
    the millions of instructions each import executes beyond a bare interpreter, when counted."""
    bare = median(imports["bare"])

    def beyond_bare(key: str) -> dict[str, float]:
        return {"import_m_instructions": round((instructions[key] - instructions["bare"]) / 1e6, 1)} \
            if key in instructions else {}

    functions = {}
    for name in FUNCTIONS:
        runs = children[name]
        rss = [r["peak_rss_kb"] / 1024 for r in runs]
        functions[name] = {
            "import_ms": round(median(imports[name]) - bare, 1),
            **({"import_baseline_ms": round(median(imports[f"{name} @ baseline"]) - bare, 1)}
               if f"{name} @ baseline" in imports else {}),
            "import_no_bytecode_ms": round(median(imports[f"{name} (no bytecode)"]) - bare, 1),
            **beyond_bare(name),
            **({"import_baseline_m_instructions": beyond_bare(f"{name} @ baseline")["import_m_instructions"]}
               if f"{name} @ baseline" in instructions else {}),
            **({"import_sqs_m_instructions": beyond_bare(f"{name} (SQS queue)")["import_m_instructions"]}
               if f"{name} (SQS queue)" in instructions else {}),
            **({"import_sqs_ms": round(median(imports[f"{name} (SQS queue)"]) - bare, 1)}
               if f"{name} (SQS queue)" in imports else {}),
            "first_request_ms": round(median([r["request_ms"][0] for r in runs]), 2),
            "later_requests_ms": round(median([t for r in runs for t in r["request_ms"][1:]]), 2),
            "statuses": sorted({s for r in runs for s in r["statuses"]}),
            "peak_rss_mb": round(median(rss), 1), "peak_rss_mb_max": round(max(rss), 1),
            "processes": len(runs),
        }
    result: dict[str, Any] = {"bare_python_ms": round(bare, 1), "functions": functions,
                              "samples_ms": {key: [round(v, 2) for v in values] for key, values in imports.items()}}
    counted = [f for f in functions.values() if f.get("import_m_instructions")]
    if counted:  # this machine's speed: wall milliseconds per million instructions, over the imports
        result["ms_per_m_instructions"] = round(median([f["import_ms"] / f["import_m_instructions"]
                                                        for f in counted]), 4)
    if "boto3 + Secrets Manager client" in imports:
        result["boto3_client_ms"] = round(median(imports["boto3 + Secrets Manager client"]) - bare, 1)
    return result
