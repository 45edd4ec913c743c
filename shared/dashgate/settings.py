"""Settings: every configuration value, read once from the environment into one frozen object."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass

from dashgate.errors import ConfigurationError

#: Minimum length of a session signing key (256 bits of printable text is about 43 characters;
#: 32 keeps hand-made keys possible while refusing obviously weak ones).
MIN_KEY_LENGTH = 32
#: Largest request body accepted, before and after base64 decoding (SPEC: Bad input).
MAX_BODY_BYTES = 16 * 1024
#: Longest reset or confirmation token looked at: ours are 43 characters (32 bytes, base64url).
TOKEN_MAX = 128
#: Password verifications one account may cost an attacker in any 24 hours, however paced
#: (NIST SP 800-63B 5.2.2: "no more than 100 consecutive failed attempts").
MAX_VERIFICATIONS_PER_DAY = 100
DAY_SECONDS = 86400
#: Longest life of an identity assertion from the gateway's authorizer (SPEC: The dashboard host).
MAX_ASSERTION_SECONDS = 60


@dataclass(frozen=True, eq=False, repr=False)
class Settings:
    """Configuration of one execution environment; see the README's Configuration table. No repr (it
    holds keys and the database URL: never printed, never logged) and no value equality, which nothing
    needs: both are generated code a cold start would compile for 80 fields (about 2 ms)."""

    database_url: str | None = None
    db_secret_arn: str | None = None
    db_host: str | None = None
    db_connect_timeout: int = 3
    db_statement_timeout_ms: int = 3000
    session_secret_arn: str | None = None
    session_secrets: tuple[str, ...] = ()
    session_cookie_secure: bool = True
    cookie_domain: str | None = None
    session_cookie_name: str = "__Host-session"
    remember_me_seconds: int = 86400
    session_ttl_seconds: int = 8 * 3600
    session_idle_seconds: int = 3600
    session_touch_seconds: int = 300
    signing_keys_ttl_seconds: int = 300
    device_cookie_seconds: int = 90 * DAY_SECONDS
    default_redirect: str = "/dash/"
    allowed_origins: tuple[str, ...] = ()
    argon2_time_cost: int = 2
    argon2_memory_cost: int = 19456
    argon2_parallelism: int = 1
    healthcheck_sql: str = "select 1"
    healthcheck_timeout_seconds: int = 2
    login_max_failures_per_email: int = 5
    login_max_failures_per_ip: int = 50
    login_failure_window_seconds: int = DAY_SECONDS
    login_backoff_base_seconds: int = 30
    login_backoff_max_seconds: int = 1200
    register_max_per_ip: int = 10
    register_window_seconds: int = 3600
    csrf_max_age_seconds: int = 12 * 3600
    flash_max_age_seconds: int = 300
    metrics_namespace: str = "dashgate"
    identity_secret_arn: str | None = None
    identity_secrets: tuple[str, ...] = ()
    identity_assertion_seconds: int = MAX_ASSERTION_SECONDS
    origin_verify_secret_arn: str | None = None
    origin_verify_secrets: tuple[str, ...] = ()
    # Account recovery and email (SPEC: "Account recovery and email"; README: Account recovery).
    public_base_url: str | None = None
    mail_from: str | None = None
    mail_queue_url: str | None = None
    mail_outbox_dir: str | None = None
    ses_configuration_set: str | None = None
    password_reset_ttl_seconds: int = 3600
    email_confirm_ttl_seconds: int = 2 * DAY_SECONDS
    require_confirmed_email: bool = False
    forgot_max_per_ip: int = 20
    forgot_window_seconds: int = 3600

    @property
    def cookie_prefix(self) -> str:
        """`__Host-` where the browser allows it: Secure, Path=/ and no Domain (RFC 6265bis 4.1.3.2)."""
        return "__Host-" if self.session_cookie_secure and not self.cookie_domain else ""

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Build settings from environment variables, failing fast with the variable's name."""
        env = Env(os.environ if environ is None else environ)
        secure = env.boolean("SESSION_COOKIE_SECURE", True)
        domain = env.text("COOKIE_DOMAIN") or None
        default_name = "__Host-session" if secure and not domain else "session"
        settings = cls(
            database_url=env.text("DATABASE_URL") or None,
            db_secret_arn=env.text("DB_SECRET_ARN") or None,
            db_host=env.text("DB_HOST") or None,
            db_connect_timeout=env.integer("DB_CONNECT_TIMEOUT", 3, low=2, high=30),
            db_statement_timeout_ms=env.integer("DB_STATEMENT_TIMEOUT_MS", 3000, low=100, high=60000),
            session_secret_arn=env.text("SESSION_SECRET_ARN") or None,
            session_secrets=parse_keys(env.text("SESSION_SECRETS"), "SESSION_SECRETS"),
            session_cookie_secure=secure,
            cookie_domain=domain,
            session_cookie_name=env.text("SESSION_COOKIE_NAME") or default_name,
            remember_me_seconds=env.integer("REMEMBER_ME_SECONDS", 86400, low=60),
            session_ttl_seconds=env.integer("SESSION_TTL_SECONDS", 8 * 3600, low=60),
            session_idle_seconds=env.integer("SESSION_IDLE_SECONDS", 3600, low=60),
            session_touch_seconds=env.integer("SESSION_TOUCH_SECONDS", 300, low=1),
            signing_keys_ttl_seconds=env.integer("SIGNING_KEYS_TTL_SECONDS", 300, low=1, high=3600),
            device_cookie_seconds=env.integer("DEVICE_COOKIE_SECONDS", 90 * DAY_SECONDS, low=3600),
            default_redirect=env.text("DEFAULT_REDIRECT") or "/dash/",
            allowed_origins=tuple(o.strip().rstrip("/") for o in env.text("ALLOWED_ORIGINS").split(",") if o.strip()),
            argon2_time_cost=env.integer("ARGON2_TIME_COST", 2, low=1, high=100),
            argon2_memory_cost=env.integer("ARGON2_MEMORY_COST", 19456, low=8, high=4 * 1024 * 1024),
            argon2_parallelism=env.integer("ARGON2_PARALLELISM", 1, low=1, high=64),
            healthcheck_sql=env.text("HEALTHCHECK_SQL") or "select 1",
            healthcheck_timeout_seconds=env.integer("HEALTHCHECK_TIMEOUT_SECONDS", 2, low=1, high=4),
            login_max_failures_per_email=env.integer("LOGIN_MAX_FAILURES_PER_EMAIL", 5, low=1),
            login_max_failures_per_ip=env.integer("LOGIN_MAX_FAILURES_PER_IP", 50, low=1),
            login_failure_window_seconds=env.integer("LOGIN_FAILURE_WINDOW_SECONDS", DAY_SECONDS, low=DAY_SECONDS),
            login_backoff_base_seconds=env.integer("LOGIN_BACKOFF_BASE_SECONDS", 30, low=1),
            login_backoff_max_seconds=env.integer("LOGIN_BACKOFF_MAX_SECONDS", 1200, low=1),
            register_max_per_ip=env.integer("REGISTER_MAX_PER_IP", 10, low=1),
            register_window_seconds=env.integer("REGISTER_WINDOW_SECONDS", 3600, low=1),
            metrics_namespace=env.text("POWERTOOLS_METRICS_NAMESPACE") or "dashgate",
            identity_secret_arn=env.text("IDENTITY_SECRET_ARN") or None,
            identity_secrets=parse_keys(env.text("IDENTITY_SECRETS"), "IDENTITY_SECRETS"),
            identity_assertion_seconds=env.integer("IDENTITY_ASSERTION_SECONDS", MAX_ASSERTION_SECONDS, low=5,
                                                   high=MAX_ASSERTION_SECONDS),
            origin_verify_secret_arn=env.text("ORIGIN_VERIFY_SECRET_ARN") or None,
            origin_verify_secrets=parse_keys(env.text("ORIGIN_VERIFY_SECRETS"), "ORIGIN_VERIFY_SECRETS"),
            public_base_url=env.text("PUBLIC_BASE_URL").rstrip("/") or None,
            mail_from=env.text("MAIL_FROM") or None,
            mail_queue_url=env.text("MAIL_QUEUE_URL") or None,
            mail_outbox_dir=env.text("MAIL_OUTBOX_DIR") or None,
            ses_configuration_set=env.text("SES_CONFIGURATION_SET") or None,
            password_reset_ttl_seconds=env.integer("PASSWORD_RESET_TTL_SECONDS", 3600, low=300, high=DAY_SECONDS),
            email_confirm_ttl_seconds=env.integer("EMAIL_CONFIRM_TTL_SECONDS", 2 * DAY_SECONDS, low=3600,
                                                  high=30 * DAY_SECONDS),
            require_confirmed_email=env.boolean("REQUIRE_CONFIRMED_EMAIL", False),
            forgot_max_per_ip=env.integer("FORGOT_MAX_PER_IP", 20, low=1),
            forgot_window_seconds=env.integer("FORGOT_WINDOW_SECONDS", 3600, low=1),
        )
        if env.text("ORIGIN_VERIFY_SECRET"):  # the single value of earlier versions: never silently ignored
            raise ConfigurationError("ORIGIN_VERIFY_SECRET is replaced by ORIGIN_VERIFY_SECRET_ARN (the stack's "
                                     "OriginVerifySecretArn) or ORIGIN_VERIFY_SECRETS (a comma list)")
        settings.check()
        return settings

    def check(self) -> None:
        """Refuse a missing database and combinations that browsers or argon2 would silently break."""
        if not self.database_url and not self.db_secret_arn:
            raise ConfigurationError("Set DATABASE_URL (locally) or DB_SECRET_ARN (in AWS, an RDS-style secret)")
        if self.session_cookie_name.startswith("__Host-") and not self.cookie_prefix:
            raise ConfigurationError(
                "SESSION_COOKIE_NAME: the __Host- prefix needs SESSION_COOKIE_SECURE=true and no COOKIE_DOMAIN"
            )
        if self.argon2_memory_cost < 8 * self.argon2_parallelism:
            raise ConfigurationError("ARGON2_MEMORY_COST must be at least 8 KiB per lane (ARGON2_PARALLELISM)")
        if not _is_local_path(self.default_redirect):
            raise ConfigurationError("DEFAULT_REDIRECT must be a local path such as /dash/")
        if set(self.identity_secrets) & set(self.session_secrets):  # "a key used for nothing else"
            raise ConfigurationError("IDENTITY_SECRETS must not reuse a key of SESSION_SECRETS")
        if self.public_base_url is not None and not _is_base_url(self.public_base_url):
            raise ConfigurationError("PUBLIC_BASE_URL must be an https:// origin such as https://dash.example.com "
                                     "(http:// only for localhost)")
        if self.login_backoff_max_seconds < self.login_backoff_base_seconds:
            raise ConfigurationError("LOGIN_BACKOFF_MAX_SECONDS must be at least LOGIN_BACKOFF_BASE_SECONDS")
        if self.login_failure_window_seconds < DAY_SECONDS:  # the bound below assumes it
            raise ConfigurationError(f"LOGIN_FAILURE_WINDOW_SECONDS must be at least {DAY_SECONDS}")
        worst = worst_case_verifications_per_day(self.login_max_failures_per_email, self.login_backoff_base_seconds,
                                                 self.login_backoff_max_seconds)
        if worst > MAX_VERIFICATIONS_PER_DAY:
            raise ConfigurationError(
                f"LOGIN_MAX_FAILURES_PER_EMAIL, LOGIN_BACKOFF_BASE_SECONDS and LOGIN_BACKOFF_MAX_SECONDS "
                f"allow {worst} password guesses per account in 24 hours; "
                f"at most {MAX_VERIFICATIONS_PER_DAY} are allowed (NIST SP 800-63B 5.2.2)")

    @property
    def has_identity_keys(self) -> bool:
        """Whether identity assertions can be signed or checked here (the authorizer, a gateway host)."""
        return bool(self.identity_secret_arn or self.identity_secrets)

    @property
    def enforces_origin(self) -> bool:
        """Whether the guard refuses requests that did not come through the gateway."""
        return bool(self.origin_verify_secret_arn or self.origin_verify_secrets)

    @property
    def counter_memory_seconds(self) -> int:
        """How long a throttle counter must be kept after its last hit to still mean something:
        housekeeping never prunes a counter younger than this (pruning it would reset a throttle)."""
        return max(self.login_failure_window_seconds, self.login_backoff_max_seconds, self.register_window_seconds,
                   self.forgot_window_seconds, DAY_SECONDS)  # DAY: the per-address mail limits count a day


def backoff_seconds(hits: int, limit: int, base: int, cap: int) -> int:
    """The wait after `hits` counted attempts: none below `limit`, then base * 2^(hits - limit), capped.
    (store.JUDGE_ATTEMPT computes the same in SQL, atomically; this copy lets settings check it.)"""
    return 0 if hits < limit else min(base * 2 ** min(hits - limit, 30), cap)


def worst_case_verifications_per_day(limit: int, base: int, cap: int) -> int:
    """Most attempts one account's counter lets through in any 24 hours, the attacker pacing each at
    the earliest moment the backoff allows. The first day of a fresh counter is the worst: waits only
    grow with the count, and a counter is forgotten only after a quiet day (LOGIN_FAILURE_WINDOW_SECONDS
    is at least a day), so no 24 hours ever see two counters' first days."""
    if limit > MAX_VERIFICATIONS_PER_DAY:
        return limit  # the free attempts alone are too many (and a huge limit would loop for long)
    attempts, hits, t = 0, 0, 0
    while t < DAY_SECONDS:
        attempts += 1
        hits += 1
        t += backoff_seconds(hits, limit, base, cap)
    return attempts


def _is_base_url(value: str) -> bool:
    """An origin (and optional path prefix) that links may be built from: https, or http on localhost."""
    from urllib.parse import urlsplit

    parts = urlsplit(value)
    local = parts.hostname in ("localhost", "127.0.0.1", "::1")
    return (parts.scheme == "https" or (parts.scheme == "http" and local)) and bool(parts.hostname) \
        and not parts.query and not parts.fragment and not parts.username and value.isprintable()


def _is_local_path(value: str) -> bool:
    return value.startswith("/") and not value.startswith(("//", "/\\")) and value.isprintable()


def parse_keys(raw: str, source: str) -> tuple[str, ...]:
    """Split a comma-separated key list (current key first), each at least MIN_KEY_LENGTH long."""
    keys = tuple(k.strip() for k in raw.split(",") if k.strip())
    if any(len(k) < MIN_KEY_LENGTH for k in keys):
        raise ConfigurationError(f"{source}: every signing key must be at least {MIN_KEY_LENGTH} characters")
    return keys


def parse_secret_keys(secret_string: str, source: str) -> tuple[str, ...]:
    """Read signing keys from a secret: JSON {"current": ..., "previous": [...], "next": ...} or a comma
    list. Current first (it signs); previous keys and the next one are accepted only, so a rotation
    can be published before any environment signs with it (README: Rotating the signing keys)."""
    try:
        data = json.loads(secret_string)
    except ValueError:
        return parse_keys(secret_string, source)
    if not isinstance(data, dict) or not isinstance(data.get("current"), str):
        raise ConfigurationError(f'{source}: the secret must be JSON with a "current" key')
    accepted = []
    for name in ("previous", "next"):
        value = data.get(name) or []
        accepted += [value] if isinstance(value, str) else list(value)
    if not all(isinstance(key, str) for key in accepted):
        raise ConfigurationError(f'{source}: "previous" and "next" must be keys or lists of keys')
    return parse_keys(",".join([data["current"], *accepted]), source)


def fetch_secret_string(arn: str) -> str:
    """Read a secret's string: through the AWS Parameters and Secrets Lambda extension when the
    function has it (no boto3 at cold start: 255 ms and 20 MB less), else with boto3."""
    port, token = os.environ.get("PARAMETERS_SECRETS_EXTENSION_HTTP_PORT"), os.environ.get("AWS_SESSION_TOKEN")
    if port and token:
        try:
            return _secret_from_extension(arn, int(port), token)
        except (OSError, ValueError, KeyError):
            pass  # not there or not ready yet: the SDK reads it instead
    import boto3  # 160-250 ms of import: paid only where a secret ARN is configured
    from botocore.config import Config

    # Bounded, so an unreachable Secrets Manager (a VPC without an endpoint) gives a prompt 503.
    config = Config(connect_timeout=2, read_timeout=3, retries={"max_attempts": 2})
    return boto3.client("secretsmanager", config=config).get_secret_value(SecretId=arn)["SecretString"]


def _secret_from_extension(arn: str, port: int, token: str) -> str:
    """GET localhost:<port>/secretsmanager/get (the extension's documented API; it caches too)."""
    import urllib.parse
    import urllib.request

    url = f"http://localhost:{port}/secretsmanager/get?secretId={urllib.parse.quote(arn, safe='')}"
    request = urllib.request.Request(url, headers={"X-Aws-Parameters-Secrets-Token": token})
    with urllib.request.urlopen(request, timeout=2) as response:  # noqa: S310 - a fixed local URL
        return json.loads(response.read())["SecretString"]


class Env:
    """Typed reads of environment variables; each failure names the variable."""

    def __init__(self, environ: Mapping[str, str]) -> None:
        self._environ = environ

    def text(self, name: str) -> str:
        """The variable's value, stripped; empty when unset."""
        return self._environ.get(name, "").strip()

    def integer(self, name: str, default: int, *, low: int = 0, high: int | None = None) -> int:
        """An integer within [low, high]."""
        raw = self.text(name)
        if not raw:
            return default
        try:
            value = int(raw)
        except ValueError:
            raise ConfigurationError(f"{name} must be an integer, not {raw!r}") from None
        if value < low or (high is not None and value > high):
            limit = f"between {low} and {high}" if high is not None else f"at least {low}"
            raise ConfigurationError(f"{name} must be {limit}, not {value}")
        return value

    def boolean(self, name: str, default: bool) -> bool:
        """true/false, 1/0, yes/no, on/off."""
        raw = self.text(name).lower()
        if not raw:
            return default
        if raw in ("1", "true", "yes", "on"):
            return True
        if raw in ("0", "false", "no", "off"):
            return False
        raise ConfigurationError(f"{name} must be true or false, not {raw!r}")
