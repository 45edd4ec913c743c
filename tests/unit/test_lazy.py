"""dashgate.lazy: a function loads the Powertools modules it uses, and the packages still work whole."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time

import pytest

from dashgate.lazy import defer_init
from tests.support import ROOT

PROBE = """
import json, sys
sys.path[0:0] = [{function!r}, {layer!r}]
import app
loaded = sorted(m for m in sys.modules if m.startswith(("aws_lambda_powertools.", "asyncio.", "jmespath")))
import asyncio, asyncio.exceptions, logging
from aws_lambda_powertools import Tracer
from aws_lambda_powertools.utilities.jmespath_utils import query

async def answer():
    await asyncio.sleep(0)
    return 42

package_logger = logging.getLogger("aws_lambda_powertools")
from aws_lambda_powertools.event_handler import AppSyncResolver, APIGatewayHttpResolver
from aws_lambda_powertools.utilities.data_classes import SQSEvent, APIGatewayProxyEventV2
import aws_lambda_powertools.event_handler as handlers
print(json.dumps({{"loaded": loaded, "all": sorted(handlers.__all__),
                   "same_class": APIGatewayHttpResolver is type(app.app).__mro__[1],
                   "event": APIGatewayProxyEventV2.__name__, "sqs": SQSEvent.__name__,
                   "appsync": AppSyncResolver.__module__, "asyncio_run": asyncio.run(answer()),
                   "cancelled_is_one_class": asyncio.CancelledError is asyncio.exceptions.CancelledError,
                   "tracer": Tracer.__module__, "jmespath": query(envelope="a.b", data={{"a": {{"b": 1}}}}),
                   "package_logger": [type(h).__name__ for h in package_logger.handlers],
                   "package_logger_propagates": package_logger.propagate}}))
"""


def test_a_function_loads_only_the_http_resolver_and_the_packages_still_answer_every_name() -> None:
    # GIVEN the login function imported in a fresh interpreter, as Lambda does
    env = {"DATABASE_URL": "postgresql://x@127.0.0.1:1/x", "SESSION_SECRETS": "b" * 48,
           "AWS_DEFAULT_REGION": "eu-west-1", "MAIL_OUTBOX_DIR": "/tmp/dashgate-lazy-outbox",
           "PUBLIC_BASE_URL": "https://dash.example.test", "PATH": "/usr/bin:/bin"}
    probe = PROBE.format(function=str(ROOT / "functions" / "login"), layer=str(ROOT / "shared"))
    done = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True, timeout=120,
                          check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])

    # THEN none of the other resolvers or event classes was loaded at import
    loaded = result["loaded"]
    assert "aws_lambda_powertools.event_handler.api_gateway" in loaded
    for unused in ("aws_lambda_powertools.event_handler.appsync", "aws_lambda_powertools.event_handler.bedrock_agent",
                   "aws_lambda_powertools.event_handler.vpc_lattice",
                   "aws_lambda_powertools.utilities.data_classes.kafka_event",
                   "aws_lambda_powertools.utilities.data_classes.s3_event"):
        assert unused not in loaded
    # AND neither JMESPath (dashgate reads the correlation id itself) nor asyncio's loops and streams
    # (psycopg imports a few asyncio names for its async half) were loaded
    assert not [m for m in loaded if m.startswith("jmespath")]
    assert "asyncio.base_events" not in loaded and "asyncio.exceptions" in loaded
    # AND every name of the packages is still there when asked for, from the modules that define it
    assert result["same_class"] and result["event"] == "APIGatewayProxyEventV2" and result["sqs"] == "SQSEvent"
    assert result["appsync"] == "aws_lambda_powertools.event_handler.appsync"
    assert "APIGatewayHttpResolver" in result["all"] and "AppSyncResolver" in result["all"]
    assert result["asyncio_run"] == 42 and result["cancelled_is_one_class"]
    assert result["tracer"] == "aws_lambda_powertools.tracing.tracer" and result["jmespath"] == 1
    # AND Powertools' own log messages are still discarded, as its __init__ arranges
    assert result["package_logger"] == ["NullHandler"] and result["package_logger_propagates"] is False


@pytest.fixture
def package(tmp_path, monkeypatch: pytest.MonkeyPatch):
    """package(name, init, **modules): a package written under tmp_path, importable, forgotten afterwards."""
    monkeypatch.syspath_prepend(str(tmp_path))
    made: list[str] = []

    def make(name: str, init: str, **modules: str) -> str:
        (tmp_path / name).mkdir()
        (tmp_path / name / "__init__.py").write_text(init)
        for module, text in modules.items():
            (tmp_path / name / f"{module}.py").write_text(text)
        made.append(name)
        return name

    yield make
    for name in made:
        for key in [k for k in sys.modules if k == name or k.startswith(f"{name}.")]:
            del sys.modules[key]


def test_a_renamed_import_is_found_under_its_new_name_without_running_the_init(package) -> None:
    name = package("renaming", "from .part import A as B\nRAN = True\n", part="A = 42\n")
    assert defer_init(name)

    from renaming import B  # type: ignore[import-not-found]

    assert B == 42 and "RAN" not in vars(sys.modules[name])


def test_threads_asking_while_the_init_runs_wait_for_it(package) -> None:
    # GIVEN a package whose __init__ takes a while, deferred
    name = package("slow", "import time\ntime.sleep(0.3)\nLATE = 1\n")
    defer_init(name)
    seen: list[object] = []

    def ask() -> None:
        try:
            seen.append(sys.modules[name].LATE)
        except Exception as exc:  # what the second thread got before: AttributeError while the first ran it
            seen.append(exc)

    # WHEN two threads ask for a name only the __init__ defines, the second while the first runs it
    threads = [threading.Thread(target=ask) for _ in range(2)]
    threads[0].start()
    time.sleep(0.1)
    threads[1].start()
    for thread in threads:
        thread.join()

    # THEN both get it
    assert seen == [1, 1]


def test_an_init_that_fails_fails_as_an_import_and_runs_again_next_time(package, tmp_path) -> None:
    flag = tmp_path / "fail-once"
    flag.write_text("")
    name = package("flaky", f"import os\nif os.path.exists({str(flag)!r}):\n    os.remove({str(flag)!r})\n"
                            "    raise RuntimeError('first time')\nREADY = True\n")
    defer_init(name)

    with pytest.raises(RuntimeError):
        sys.modules[name].READY  # noqa: B018
    assert sys.modules[name].READY is True
