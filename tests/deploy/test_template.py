"""The SAM template, proved offline: lint, validate, the translated route table, and an arm64 build."""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

import pytest
from samtranslator.translator.transform import transform
from samtranslator.yaml_helper import yaml_parse

from tests.support import ROOT, load_handler

TOOLS = ROOT / ".venv-tools" / "bin"
OFFLINE_ENV = {**os.environ, "SAM_CLI_TELEMETRY": "0", "AWS_DEFAULT_REGION": "eu-west-1",
               "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}
#: The route functions (each behind the alias `live`).
FUNCTIONS = {"register": "RegisterFunction", "login": "LoginFunction", "logout": "LogoutFunction",
             "health": "HealthFunction", "forgot": "ForgotPasswordFunction", "reset": "ResetPasswordFunction",
             "change": "ChangePasswordFunction", "confirm": "ConfirmEmailFunction"}
#: The SPEC's route table: path → (function, methods).
SPEC_ROUTES = {"/register/": ("RegisterFunction", {"GET", "POST"}), "/login/": ("LoginFunction", {"GET", "POST"}),
               "/logout/": ("LogoutFunction", {"GET", "POST"}), "/healthcheck/": ("HealthFunction", {"GET"}),
               "/password/forgot/": ("ForgotPasswordFunction", {"GET", "POST"}),
               "/password/reset/": ("ResetPasswordFunction", {"GET", "POST"}),
               "/password/change/": ("ChangePasswordFunction", {"GET", "POST"}),
               "/email/confirm/": ("ConfirmEmailFunction", {"GET", "POST"})}
#: The functions that put mail on the mail queue (one message per POST).
MAIL_SENDERS = {"RegisterFunction", "LoginFunction", "ForgotPasswordFunction", "ResetPasswordFunction",
                "ChangePasswordFunction", "ConfirmEmailFunction"}


OTHER_FUNCTIONS = {"migrate": "MigrateFunction", "authorizer": "AuthorizerFunction",
                   "housekeeping": "HousekeepingFunction", "mailer": "MailerFunction"}


class NoManagedPolicies:
    """Stands in for the translator's IAM lookup (iam:ListPolicies): no AWS account needed."""

    def load(self) -> dict:
        return {}


@pytest.fixture(scope="module")
def translated() -> dict:
    """template.yaml through the SAM transform, offline, as CloudFormation would receive it."""
    return translate()


def translate(layer_key: str = "shared") -> dict:
    """The SAM transform of template.yaml, with the artefacts `sam package` would have uploaded."""
    template = yaml_parse((ROOT / "template.yaml").read_text())
    for resource in template["Resources"].values():
        props = resource.get("Properties") or {}
        for key in ("CodeUri", "ContentUri"):
            if isinstance(props.get(key), str):
                props[key] = f"s3://offline-bucket/{props[key].strip('/')}.zip"
    template["Resources"]["DashgateLayer"]["Properties"]["ContentUri"] = f"s3://offline-bucket/{layer_key}.zip"
    os.environ.setdefault("AWS_DEFAULT_REGION", "eu-west-1")
    return transform(template, {}, NoManagedPolicies())


def route_table(cfn: dict) -> dict[str, str]:
    """Route key → integration target (a function's logical id, or the proxied URL's parameter)."""
    api = next(r for r in cfn["Resources"].values() if r["Type"] == "AWS::ApiGatewayV2::Api")
    routes = {}
    for path, methods in api["Properties"]["Body"]["paths"].items():
        for method, operation in methods.items():
            integration = operation["x-amazon-apigateway-integration"]
            key = "$default" if operation.get("isDefaultRoute") else (
                f"{'ANY' if method == 'x-amazon-apigateway-any-method' else method.upper()} {path}")
            uri = integration["uri"]
            if integration["type"] == "http_proxy":  # DashboardUrl, or InsecureDashboardUrl when set
                assert uri == {"Fn::If": ["UseInsecureDashboardUrl", {"Ref": "InsecureDashboardUrl"},
                                          {"Ref": "DashboardUrl"}]}
                routes[key] = "http_proxy:DashboardUrl"
            else:
                routes[key] = invoked_function(cfn, uri["Fn::Sub"])
    return routes


def invoked_function(cfn: dict, uri: str) -> str:
    """The function a Lambda integration URI invokes: `${Fn.Arn}`, or `${FnAliaslive}` (an alias of Fn)."""
    target = re.search(r"\$\{(\w+?)(?:\.Arn)?\}/invocations", uri).group(1)
    resource = cfn["Resources"][target]
    return resource["Properties"]["FunctionName"]["Ref"] if resource["Type"] == "AWS::Lambda::Alias" else target


def gateway_match(routes: dict[str, str], method: str, path: str) -> str:
    """HTTP API route selection: an exact route, else the longest greedy {proxy+} prefix, else $default."""
    for candidate in (method, "ANY"):
        if f"{candidate} {path}" in routes:
            return routes[f"{candidate} {path}"]
    greedy = [(key, target) for key, target in routes.items()
              if key.startswith((f"{method} ", "ANY ")) and key.endswith("/{proxy+}")
              and path.startswith(key.split(" ", 1)[1].removesuffix("{proxy+}"))]
    return max(greedy, key=lambda kt: len(kt[0]))[1] if greedy else routes["$default"]


def test_no_route_key_ends_in_a_slash(translated: dict) -> None:
    # API Gateway refuses such keys and SAM drops them silently (aws/serverless-application-model#1949)
    assert [key for key in route_table(translated) if key.endswith("/") and key != "$default"] == []


@pytest.mark.parametrize("path", list(SPEC_ROUTES))
def test_every_method_of_each_spec_path_reaches_its_function_with_and_without_slash(translated: dict,
                                                                                   path: str) -> None:
    routes = route_table(translated)
    function, methods = SPEC_ROUTES[path]

    assert f"ANY {path.rstrip('/')}" in routes
    assert f"ANY {path}{{proxy+}}" in routes
    # Every method reaches the function, which serves its own and answers 405 with Allow for the
    # others (SPEC: Requests), HEAD included (uptime monitors): none is proxied to the dashboard.
    for method in {*methods, "HEAD", "PUT", "DELETE", "PATCH", "OPTIONS", "TRACE"}:
        assert gateway_match(routes, method, path) == function
        assert gateway_match(routes, method, path.rstrip("/")) == function


def test_every_other_path_goes_to_the_dashboard(translated: dict) -> None:
    routes = route_table(translated)

    assert routes["$default"] == "http_proxy:DashboardUrl"
    for method, path in [("GET", "/"), ("GET", "/dash/"), ("POST", "/_dash-update-component"), ("GET", "/loginx"),
                         ("GET", "/password/"), ("GET", "/email/confirmx"), ("GET", "/_outbox/")]:
        assert gateway_match(routes, method, path) == "http_proxy:DashboardUrl"


def test_every_function_runs_arm64_python313_with_the_layer(translated: dict) -> None:
    functions = {k: r for k, r in translated["Resources"].items() if r["Type"] == "AWS::Lambda::Function"}

    assert set(functions) == {*FUNCTIONS.values(), *OTHER_FUNCTIONS.values(), "ConfigDigestFunction"}
    for logical, resource in functions.items():
        props = resource["Properties"]
        assert props["Runtime"] == "python3.13" and props["Architectures"] == ["arm64"]
        if logical != "ConfigDigestFunction":  # inline code of a few lines: no layer
            assert "DashgateLayer" in json.dumps(props["Layers"])


def test_the_layer_builds_for_arm64(translated: dict) -> None:
    template = yaml_parse((ROOT / "template.yaml").read_text())
    layer = template["Resources"]["DashgateLayer"]

    assert layer["Metadata"] == {"BuildMethod": "python3.13", "BuildArchitecture": "arm64"}
    assert layer["Properties"]["ContentUri"] == "shared/"
    requirements = [line for line in (ROOT / "shared" / "requirements.txt").read_text().splitlines()
                    if line.strip() and not line.startswith("#")]
    assert requirements and not [line for line in requirements if line.startswith(("boto3", "botocore"))]


@pytest.mark.parametrize("name", [*FUNCTIONS, *OTHER_FUNCTIONS])
def test_each_handler_named_in_the_template_imports_and_is_callable(name: str, env: dict) -> None:
    template = yaml_parse((ROOT / "template.yaml").read_text())
    logical = {**FUNCTIONS, **OTHER_FUNCTIONS}[name]
    props = template["Resources"][logical]["Properties"]
    module_name, function = props["Handler"].split(".")

    module = load_handler(name)

    assert props["CodeUri"] == f"functions/{name}/" and module_name == "app"
    assert callable(getattr(module, function))
    if hasattr(module, "runtime"):
        module.runtime.store.close()


def test_secrets_are_read_with_least_privilege(translated: dict) -> None:
    template = yaml_parse((ROOT / "template.yaml").read_text())
    secret = template["Resources"]["SessionSecret"]["Properties"]["GenerateSecretString"]
    policies = {name: json.dumps(template["Resources"][logical]["Properties"]["Policies"])
                for name, logical in {**FUNCTIONS, **OTHER_FUNCTIONS}.items()}

    assert secret["GenerateStringKey"] == "current" and secret["PasswordLength"] >= 32  # the shape sessions reads
    for name, policy in policies.items():
        assert "DbSecretArn" in policy
        assert ("SessionSecret" in policy) == (name not in ("health", "migrate", "housekeeping", "mailer"))
    roles = [r for r in translated["Resources"].values() if r["Type"] == "AWS::IAM::Role"]
    for role in roles:
        for statement in json.dumps(role["Properties"].get("Policies", [])).split("Statement")[1:]:
            assert '"Action": "*"' not in statement


def test_operations_resources_are_present(translated: dict) -> None:
    resources = translated["Resources"]
    stage = next(r for r in resources.values() if r["Type"] == "AWS::ApiGatewayV2::Stage")

    # The gateway's access log is the line per request (the functions log refusals and failures only)
    access_log = json.loads(stage["Properties"]["AccessLogSettings"]["Format"])
    assert {"requestId", "method", "path", "status", "latencyMs", "integrationLatencyMs"} <= set(access_log)
    assert access_log["requestId"] == "$context.requestId"
    assert stage["Properties"]["DefaultRouteSettings"]["ThrottlingRateLimit"] == {"Ref": "ThrottlingRateLimit"}
    assert resources["HealthCanary"]["Condition"] == resources["HealthCanaryAlarm"]["Condition"] == "CanaryEnabled"
    assert resources["HealthCanary"]["Properties"]["RuntimeVersion"] == {"Ref": "CanaryRuntimeVersion"}
    assert resources["SchemaMigrations"]["Properties"]["ServiceToken"] == {"Fn::GetAtt": ["MigrateFunction", "Arn"]}
    assert set(translated["Outputs"]) >= {"ApiUrl", "HealthUrl"}


def test_code_that_needs_the_schema_waits_for_the_migration(translated: dict) -> None:
    resources = translated["Resources"]
    needs_schema = [*FUNCTIONS.values(), "AuthorizerFunction", "HousekeepingFunction", "MailerFunction"]

    # the function, hence its published version and alias (they refer to it), hence the routes to it
    for logical in needs_schema:
        assert "SchemaMigrations" in resources[logical]["DependsOn"], logical
    versions = {r["Properties"]["FunctionName"]["Ref"] for r in resources.values()
                if r["Type"] == "AWS::Lambda::Version"}
    assert versions == {*FUNCTIONS.values(), "AuthorizerFunction"}
    assert "SchemaMigrations" not in resources["MigrateFunction"].get("DependsOn", [])


def test_the_migration_runs_again_when_the_database_target_changes(translated: dict) -> None:
    props = translated["Resources"]["SchemaMigrations"]["Properties"]

    # Custom resource properties: a change of any of them is an Update, which migrates.
    assert props["DbSecretArn"] == {"Ref": "DbSecretArn"} and props["DbHost"] == {"Ref": "DbHost"}
    assert props["LayerVersion"]["Ref"].startswith("DashgateLayer")  # the version's logical id: a hash added


def test_housekeeping_runs_hourly_on_a_schedule(translated: dict) -> None:
    schedules = [r for r in translated["Resources"].values() if r["Type"] == "AWS::Scheduler::Schedule"]

    assert len(schedules) == 1
    assert schedules[0]["Properties"]["ScheduleExpression"] == "rate(1 hour)"
    assert schedules[0]["Properties"]["Target"]["Arn"] == {"Fn::GetAtt": ["HousekeepingFunction", "Arn"]}


def run_tool(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    assert (TOOLS / args[0]).exists(), "run `make test` (it installs .venv-tools)"
    return subprocess.run([str(TOOLS / args[0]), *args[1:]], cwd=cwd, env=OFFLINE_ENV, capture_output=True,
                          text=True, timeout=600, check=False)


def test_cfn_lint_with_the_serverless_rules_reports_nothing() -> None:
    result = run_tool("cfn-lint", "--append-rules", "cfn_lint_serverless.rules", "--", "template.yaml")

    assert (result.returncode, result.stdout, result.stderr) == (0, "", "")


def test_sam_validate_lint_passes_offline() -> None:
    result = run_tool("sam", "validate", "--lint", "--region", "eu-west-1")

    assert result.returncode == 0, result.stdout + result.stderr
    assert "is a valid SAM Template" in result.stdout + result.stderr


def elf_machine(path: Path) -> int | None:
    """The e_machine field of an ELF file (183 = AArch64, 62 = x86-64), None for other files."""
    header = path.read_bytes()[:20]
    return int.from_bytes(header[18:20], "little") if header[:4] == b"\x7fELF" else None


def test_sam_build_makes_an_arm64_layer_without_a_container(tmp_path: Path) -> None:
    # sam looks for python3.13 on PATH; the project's virtualenv has one where the machine does
    # (a pyenv shim may name one it cannot run).
    venv_python = ROOT / ".venv" / "bin" / "python3.13"
    if not venv_python.exists():
        pytest.skip("no python3.13 on this machine: sam cannot build for the python3.13 runtime")
    env_path = f"{venv_python.parent}:{TOOLS}:{OFFLINE_ENV['PATH']}"
    build = tmp_path / "build"

    # the build `make build` runs: sam build, then bytecode for the read-only layer
    result = subprocess.run([str(ROOT / "scripts" / "sam-build"), "--build-dir", str(build), "--template",
                             "template.yaml"], cwd=ROOT, env={**OFFLINE_ENV, "PATH": env_path}, capture_output=True,
                            text=True, timeout=900, check=False)

    assert result.returncode == 0, result.stdout + result.stderr
    layer = build / "DashgateLayer" / "python"
    binaries = {p: elf_machine(p) for p in layer.rglob("*.so*") if p.is_file()}
    assert binaries and set(binaries.values()) == {183}, {str(p): m for p, m in binaries.items() if m != 183}
    assert not (layer / "boto3").exists() and not (layer / "botocore").exists()
    assert (layer / "dashgate" / "migrations" / "0001_users_sessions_throttle.sql").exists()
    sources = [p for p in layer.rglob("*.py") if "__pycache__" not in p.parts]
    compiled = {p.parent / "__pycache__" / f"{p.stem}.cpython-313.pyc" for p in sources}
    assert sources and all(p.exists() for p in compiled)  # Lambda cannot write them itself
    sizes = {d.name: sum(f.stat().st_size for f in d.rglob("*") if f.is_file()) for d in build.iterdir() if d.is_dir()}
    print("built sizes (bytes):", json.dumps(sizes, sort_keys=True))


IDENTITY = "x-dashgate-identity"


def integration(cfn: dict, path: str) -> dict:
    api = next(r for r in cfn["Resources"].values() if r["Type"] == "AWS::ApiGatewayV2::Api")
    return api["Properties"]["Body"]["paths"][path]["x-amazon-apigateway-any-method"]


def test_the_authorizer_checks_the_cookie_with_a_short_cache(translated: dict) -> None:
    api = next(r for r in translated["Resources"].values() if r["Type"] == "AWS::ApiGatewayV2::Api")
    authorizer = api["Properties"]["Body"]["components"]["securitySchemes"]["DashgateAuthorizer"][
        "x-amazon-apigateway-authorizer"]

    assert authorizer["identitySource"] == ["$request.header.Cookie"]  # no cookie: 401 without a call
    assert authorizer["authorizerPayloadFormatVersion"] == "2.0" and authorizer["enableSimpleResponses"] is True
    assert authorizer["authorizerResultTtlInSeconds"] == {"Ref": "AuthorizerCacheSeconds"}
    assert "AuthorizerFunctionAliaslive" in json.dumps(authorizer["authorizerUri"])  # the published alias


@pytest.mark.parametrize("path", ["/dash", "/dash/{proxy+}"])
def test_dashboard_routes_carry_the_authorizers_identity_when_enabled(translated: dict, path: str) -> None:
    route = integration(translated, path)
    enabled, disabled = route["x-amazon-apigateway-integration"]["requestParameters"]["Fn::If"][1:]

    assert route["security"] == {"Fn::If": ["AuthorizerEnabled", [{"DashgateAuthorizer": []}], []]}
    # the signed assertion, and nothing the host would have to take on trust
    assert enabled["overwrite:header.x-dashgate-identity"] == "$context.authorizer.assertion"
    assert [k for k in enabled if "identity" in k or "user" in k or "email" in k] == [
        "overwrite:header.x-dashgate-identity"]
    assert enabled["overwrite:path"] == disabled["overwrite:path"] == "$request.path"
    assert f"remove:header.{IDENTITY}" in disabled  # switched off: a client's assertion is removed
    for parameters in (enabled, disabled):
        assert json.dumps(parameters["overwrite:header.x-dashgate-origin-verify"]).endswith(
            ':SecretString:current}}"}')


def test_the_default_route_removes_client_sent_identity_headers(translated: dict) -> None:
    parameters = integration(translated, "$default")["x-amazon-apigateway-integration"]["requestParameters"]

    assert parameters[f"remove:header.{IDENTITY}"] == "''"
    assert "OriginVerifySecret" in json.dumps(parameters["overwrite:header.x-dashgate-origin-verify"])


def test_the_dashboard_url_must_be_https_unless_the_dev_parameter_is_used() -> None:
    parameters = yaml_parse((ROOT / "template.yaml").read_text())["Parameters"]
    secure = parameters["DashboardUrl"]["AllowedPattern"]
    insecure = parameters["InsecureDashboardUrl"]["AllowedPattern"]

    assert re.fullmatch(secure, "https://dash.example.com")
    for refused in ("http://dash.example.com", "HTTP://dash.example.com", "https://dash.example.com/path", "ftp://x"):
        assert not re.fullmatch(secure, refused), refused
    assert parameters["InsecureDashboardUrl"]["Default"] == "" and re.fullmatch(insecure, "")
    assert re.fullmatch(insecure, "http://localhost:8050") and not re.fullmatch(insecure, "https://x.example")


def test_the_authorizer_cache_is_shorter_than_the_assertion_it_caches(translated: dict) -> None:
    from dashgate.settings import MAX_ASSERTION_SECONDS

    cache = yaml_parse((ROOT / "template.yaml").read_text())["Parameters"]["AuthorizerCacheSeconds"]

    # a cached answer is forwarded for at most MaxValue seconds; its assertion lives 60 s from minting
    assert cache["MaxValue"] * 2 <= MAX_ASSERTION_SECONDS
    environment = translated["Resources"]["AuthorizerFunction"]["Properties"]["Environment"]["Variables"]
    assert environment["IDENTITY_SECRET_ARN"] == {"Ref": "IdentitySecret"}
    assert "IDENTITY_ASSERTION_SECONDS" not in environment  # the default, 60 s


# -- SnapStart -----------------------------------------------------------------------------------
def versions(cfn: dict) -> dict[str, str]:
    """Function logical id → the logical id of the version its alias `live` points at."""
    return {r["Properties"]["FunctionName"]["Ref"]: r["Properties"]["FunctionVersion"]["Fn::GetAtt"][0]
            for r in cfn["Resources"].values() if r["Type"] == "AWS::Lambda::Alias"}


def test_snapstart_is_a_parameter_off_by_default_for_the_route_functions(translated: dict) -> None:
    template = yaml_parse((ROOT / "template.yaml").read_text())
    functions = {k: r for k, r in translated["Resources"].items() if r["Type"] == "AWS::Lambda::Function"}

    assert template["Parameters"]["EnableSnapStart"]["Default"] == "false"
    for logical in FUNCTIONS.values():
        assert functions[logical]["Properties"]["SnapStart"] == {
            "Fn::If": ["SnapStartEnabled", {"ApplyOn": "PublishedVersions"}, {"ApplyOn": "None"}]}
    assert functions["AuthorizerFunction"]["Properties"]["SnapStart"] == functions["LoginFunction"]["Properties"][
        "SnapStart"]
    assert "SnapStart" not in functions["MigrateFunction"]["Properties"]  # a custom resource has no cold-start user


def test_the_api_invokes_each_function_through_its_published_alias(translated: dict) -> None:
    # SnapStart restores published versions only: an integration on the unqualified function never would.
    api = next(r for r in translated["Resources"].values() if r["Type"] == "AWS::ApiGatewayV2::Api")
    uris = [m["x-amazon-apigateway-integration"]["uri"]["Fn::Sub"] for path, methods in
            api["Properties"]["Body"]["paths"].items() for m in methods.values()
            if m["x-amazon-apigateway-integration"]["type"] == "aws_proxy"]

    assert set(versions(translated)) == {*FUNCTIONS.values(), "AuthorizerFunction"}
    for logical in FUNCTIONS.values():
        assert any(f"${{{logical}Aliaslive}}/invocations" in uri for uri in uris)
        assert not any(f"${{{logical}.Arn}}/invocations" in uri for uri in uris)


def test_a_new_layer_publishes_new_versions(translated: dict) -> None:
    # dashgate's code ships in the layer: a new layer must move the alias, or the API would keep
    # running the old code (SAM names versions from the function's own properties).
    republished = versions(translate(layer_key="shared-changed"))

    assert all(republished[f] != v for f, v in versions(translated).items())


def test_every_parameter_the_functions_depend_on_publishes_new_versions(translated: dict) -> None:
    # SAM hashes the template before parameters are resolved, so a version's logical id ignores
    # them; a changed Description replaces the version (CloudFormation: AWS::Lambda::Version
    # Description "Update requires: Replacement"), and the Description carries the digest.
    resources = translated["Resources"]
    template = yaml_parse((ROOT / "template.yaml").read_text())
    digest_inputs = json.dumps(resources["ConfigDigest"]["Properties"])

    for version in set(versions(translated).values()):
        assert resources[version]["Properties"]["Description"] == {
            "Fn::Sub": "dashgate configuration ${ConfigDigest.Digest}"}
    # every parameter that reaches an aliased function's configuration, directly or through a
    # condition, is an input of the digest (found in the translated functions, not listed by hand)
    for logical in versions(translated):
        configuration = json.dumps(resources[logical]["Properties"])
        used = {p for p in template["Parameters"] if f'"Ref": "{p}"' in configuration}
        for condition in set(re.findall(r'"Fn::If": \["(\w+)"', configuration)):
            used |= {p for p in template["Parameters"]
                     if f'"Ref": "{p}"' in json.dumps(template["Conditions"][condition])}
        assert used >= {"DbSecretArn", "HealthcheckSql", "EnableSnapStart"}, logical
        assert all(f'"Ref": "{p}"' in digest_inputs for p in used), (logical, used)
    assert "FunctionRevision" not in translated.get("Parameters", {})  # nothing to bump by hand


def digest_of(properties: dict, cloudformation: tuple[str, list[dict]]) -> str:
    """Run ConfigDigestFunction's inline code as CloudFormation would invoke it; the digest it answered."""
    code = yaml_parse((ROOT / "template.yaml").read_text())["Resources"]["ConfigDigestFunction"]["Properties"][
        "Code"]["ZipFile"]
    namespace: dict = {}
    exec(compile(code, "index.py", "exec"), namespace)  # the template's own inline code
    url, received = cloudformation
    namespace["handler"]({"RequestType": "Update", "ResponseURL": url, "StackId": "s", "RequestId": "r",
                          "LogicalResourceId": "ConfigDigest",
                          "ResourceProperties": {"ServiceToken": "arn", **properties}}, None)
    return received[-1]["body"]["Data"]["Digest"]


def test_two_parameter_sets_give_two_digests_and_so_two_published_versions(cloudformation) -> None:
    base = {"DbSecretArn": "arn:aws:secretsmanager:eu-west-1:1:secret:db", "DbHost": "", "HealthcheckSql": "select 1",
            "DefaultRedirect": "/dash/", "VpcSubnetIds": "", "VpcSecurityGroupIds": "",
            "SecretsExtensionLayerArn": "", "EnableSnapStart": "false"}

    first, again = digest_of(base, cloudformation), digest_of(dict(reversed(base.items())), cloudformation)
    subnets = digest_of({**base, "VpcSubnetIds": "subnet-1,subnet-2"}, cloudformation)
    reordered = digest_of({**base, "VpcSubnetIds": " subnet-2, subnet-1"}, cloudformation)
    changed = {name: digest_of({**base, name: value}, cloudformation) for name, value in [
        ("HealthcheckSql", "select ticker from public.stock_prices limit 1"), ("VpcSubnetIds", "subnet-1,subnet-2"),
        ("DbSecretArn", "arn:aws:secretsmanager:eu-west-1:1:secret:other"), ("EnableSnapStart", "true")]}

    assert first == again and cloudformation[1][-1]["body"]["Status"] == "SUCCESS"
    assert subnets == reordered  # the same configuration: no version that Lambda would not publish
    assert len({first, *changed.values()}) == 1 + len(changed)
    assert len(f"dashgate configuration {first}") <= 256  # Lambda's limit on a version's description


def test_old_versions_are_deleted_not_kept_and_billed(translated: dict) -> None:
    resources = translated["Resources"]
    version_ids = [k for k, r in resources.items() if r["Type"] == "AWS::Lambda::Version"]

    assert len(version_ids) == len(FUNCTIONS) + 1
    assert {resources[v]["DeletionPolicy"] for v in version_ids} == {"Delete"}


def test_deleting_or_replacing_the_stack_keeps_the_secrets(translated: dict) -> None:
    for secret in ("SessionSecret", "OriginVerifySecret", "IdentitySecret"):
        resource = translated["Resources"][secret]
        assert resource["DeletionPolicy"] == resource["UpdateReplacePolicy"] == "Retain", secret


def test_the_canary_bucket_never_blocks_a_delete_and_empties_itself(translated: dict) -> None:
    bucket = translated["Resources"]["CanaryArtifacts"]
    canary = translated["Resources"]["HealthCanary"]

    # CloudFormation cannot delete a bucket with objects in it: `sam delete` and EnableCanary=false
    # would fail. Retained, it expires its objects (and the canary's Lambda goes with the canary).
    assert bucket["DeletionPolicy"] == bucket["UpdateReplacePolicy"] == "Retain"
    rules = bucket["Properties"]["LifecycleConfiguration"]["Rules"]
    assert any(r["Status"] == "Enabled" and r["ExpirationInDays"] <= 30 for r in rules)
    assert canary["Properties"]["ProvisionedResourceCleanup"] == "AUTOMATIC"


def test_a_customer_managed_key_on_the_database_secret_can_be_granted(translated: dict) -> None:
    template = yaml_parse((ROOT / "template.yaml").read_text())
    readers = [k for k, r in template["Resources"].items() if "DbSecretArn" in json.dumps(r.get("Properties", {})
                                                                                         .get("Policies", []))]

    assert template["Parameters"]["DbSecretKmsKeyArn"]["Default"] == ""
    assert len(readers) == len(FUNCTIONS) + len(OTHER_FUNCTIONS)
    for logical in readers:
        grant = json.dumps(template["Resources"][logical]["Properties"]["Policies"])
        assert '"Fn::If": ["HasDbSecretKmsKey"' in grant and '"kms:Decrypt"' in grant, logical
        assert "secretsmanager.${AWS::Region}.amazonaws.com" in grant  # only through Secrets Manager
    roles = json.dumps([r for r in translated["Resources"].values() if r["Type"] == "AWS::IAM::Role"])
    assert roles.count('"Ref": "DbSecretKmsKeyArn"') == len(readers)


def test_each_function_logs_to_its_own_group_with_retention_made_before_it(translated: dict) -> None:
    resources = translated["Resources"]
    functions = {k: r for k, r in resources.items() if r["Type"] == "AWS::Lambda::Function"}

    groups = [f["Properties"]["LoggingConfig"]["LogGroup"]["Ref"] for f in functions.values()]
    assert len(set(groups)) == len(functions)
    for logical, function in functions.items():
        group = function["Properties"]["LoggingConfig"]["LogGroup"]["Ref"]
        assert resources[group]["Type"] == "AWS::Logs::LogGroup", logical
        assert resources[group]["Properties"]["RetentionInDays"] == {"Ref": "LogRetentionDays"}
        # the group's name does not depend on the function, so the function can depend on the group
        assert logical not in json.dumps(resources[group]["Properties"]["LogGroupName"]), logical


# -- account mail ----------------------------------------------------------------------------------
def test_the_mail_queue_is_encrypted_with_a_dead_letter_queue_and_an_alarm(translated: dict) -> None:
    resources = translated["Resources"]
    queue, dead = resources["MailQueue"]["Properties"], resources["MailDeadLetterQueue"]["Properties"]
    alarm = resources["MailDeadLetterAlarm"]["Properties"]
    mailer = resources["MailerFunction"]["Properties"]

    assert queue["RedrivePolicy"] == {"deadLetterTargetArn": {"Fn::GetAtt": ["MailDeadLetterQueue", "Arn"]},
                                      "maxReceiveCount": 5}
    assert queue["SqsManagedSseEnabled"] is dead["SqsManagedSseEnabled"] is True
    assert dead["MessageRetentionPeriod"] == 14 * 86400
    # AWS: a visibility timeout of at least six times the function's timeout
    assert queue["VisibilityTimeout"] >= 6 * mailer["Timeout"]
    assert alarm["Dimensions"] == [{"Name": "QueueName", "Value": {"Fn::GetAtt": ["MailDeadLetterQueue", "QueueName"]}}]
    assert alarm["ComparisonOperator"] == "GreaterThanThreshold" and alarm["Threshold"] == 0
    assert alarm["AlarmActions"] == {"Fn::If": ["HasAlarmTopic", [{"Ref": "AlarmTopicArn"}], {"Ref": "AWS::NoValue"}]}


def test_the_mailer_consumes_the_queue_reporting_batch_item_failures(translated: dict) -> None:
    mappings = [r["Properties"] for r in translated["Resources"].values()
                if r["Type"] == "AWS::Lambda::EventSourceMapping"]

    assert len(mappings) == 1
    [mapping] = mappings
    assert mapping["EventSourceArn"] == {"Fn::GetAtt": ["MailQueue", "Arn"]}
    assert mapping["FunctionName"] == {"Ref": "MailerFunction"}
    assert mapping["BatchSize"] == 10 and mapping["FunctionResponseTypes"] == ["ReportBatchItemFailures"]


def statements(cfn: dict, logical: str) -> list[dict]:
    """Every statement of the inline policies of a function's role."""
    role = cfn["Resources"][cfn["Resources"][logical]["Properties"]["Role"]["Fn::GetAtt"][0]]
    found = []
    for policy in role["Properties"].get("Policies", []):
        granted = policy["Fn::If"][1] if "Fn::If" in policy else policy  # a conditional grant: its "true" branch
        found += granted["PolicyDocument"]["Statement"]
    return found


def test_only_the_mailer_may_send_email_and_only_from_the_mail_from_address(translated: dict) -> None:
    functions = [k for k, r in translated["Resources"].items() if r["Type"] == "AWS::Lambda::Function"]
    senders = [f for f in functions if "ses:" in json.dumps(statements(translated, f))]
    [grant] = [s for s in statements(translated, "MailerFunction") if "ses:SendEmail" in json.dumps(s["Action"])]

    assert senders == ["MailerFunction"]
    assert grant["Action"] == "ses:SendEmail" and "*" not in json.dumps(grant["Resource"])
    identity, domain, configuration_set = grant["Resource"]
    assert identity == {"Fn::Sub": "arn:${AWS::Partition}:ses:${AWS::Region}:${AWS::AccountId}:identity/"
                                   "${MailFromAddress}"}
    assert domain["Fn::Sub"][1] == {"Domain": {"Fn::Select": [1, {"Fn::Split": ["@", {"Ref": "MailFromAddress"}]}]}}
    assert configuration_set["Fn::If"][0] == "HasSesConfigurationSet"
    assert "configuration-set/${SesConfigurationSet}" in configuration_set["Fn::If"][1]["Fn::Sub"]
    assert configuration_set["Fn::If"][2] == {"Ref": "AWS::NoValue"}
    assert grant["Condition"] == {"StringEquals": {"ses:FromAddress": {"Ref": "MailFromAddress"}}}


def test_the_functions_that_send_mail_may_send_to_the_mail_queue_only(translated: dict) -> None:
    functions = [k for k, r in translated["Resources"].items() if r["Type"] == "AWS::Lambda::Function"]
    allowed = {f: [s for s in statements(translated, f) if "sqs:SendMessage" in json.dumps(s["Action"])]
               for f in functions}

    assert {f for f, grants in allowed.items() if grants} == MAIL_SENDERS
    for logical in MAIL_SENDERS:
        assert "MailQueue" in json.dumps(allowed[logical]) and "*" not in json.dumps(allowed[logical][0]["Resource"])


def test_every_function_knows_the_mail_settings(translated: dict) -> None:
    functions = {k: r for k, r in translated["Resources"].items() if r["Type"] == "AWS::Lambda::Function"
                 and k != "ConfigDigestFunction"}
    template = yaml_parse((ROOT / "template.yaml").read_text())

    for logical, function in functions.items():
        variables = function["Properties"]["Environment"]["Variables"]
        assert variables["PUBLIC_BASE_URL"] == {"Ref": "PublicBaseUrl"}, logical
        assert variables["MAIL_QUEUE_URL"] == {"Ref": "MailQueue"}, logical
        assert variables["REQUIRE_CONFIRMED_EMAIL"] == {"Ref": "RequireConfirmedEmail"}, logical
        assert "MAIL_FROM" in variables and "SES_CONFIGURATION_SET" in variables, logical
    parameters = template["Parameters"]
    assert parameters["RequireConfirmedEmail"]["Default"] == "false"
    assert parameters["SesConfigurationSet"]["Default"] == ""
    assert re.fullmatch(parameters["PublicBaseUrl"]["AllowedPattern"], "https://dash.example.com")
    assert not re.fullmatch(parameters["PublicBaseUrl"]["AllowedPattern"], "http://dash.example.com")
    assert re.fullmatch(parameters["MailFromAddress"]["AllowedPattern"], "no-reply@example.com")
    assert not re.fullmatch(parameters["MailFromAddress"]["AllowedPattern"], "Name <no-reply@example.com>")


def test_the_mail_from_header_the_template_builds_is_one_address(translated: dict) -> None:
    from email.utils import parseaddr

    mail_from = translated["Resources"]["LoginFunction"]["Properties"]["Environment"]["Variables"]["MAIL_FROM"]
    with_name = mail_from["Fn::If"][1]["Fn::Sub"].replace("${MailFromName}", "Stocks, Inc.").replace(
        "${MailFromAddress}", "no-reply@example.com")

    assert mail_from["Fn::If"][0] == "HasMailFromName" and mail_from["Fn::If"][2] == {"Ref": "MailFromAddress"}
    assert parseaddr(with_name) == ("Stocks, Inc.", "no-reply@example.com")  # quoted: a comma stays in the name
