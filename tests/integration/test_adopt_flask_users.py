"""Adopting the Flask app's users: its table, made by Flask-SQLAlchemy, and its Werkzeug hashes."""

from __future__ import annotations

import json

import psycopg
import pytest
from flask import Flask
from flask_sqlalchemy import SQLAlchemy
from werkzeug.security import generate_password_hash

from dashgate.store import Store
from tests.support import ORIGIN, LambdaContext, make_event

PASSWORD = "the old flask password"


def flask_users_table(url: str) -> None:
    """The tutorial's User model, created and filled by Flask-SQLAlchemy and Werkzeug themselves."""
    app = Flask("tutorial")
    params = psycopg.conninfo.conninfo_to_dict(url)
    app.config["SQLALCHEMY_DATABASE_URI"] = (
        f"postgresql+psycopg://{params.get('user', 'postgres')}@{params.get('host', '127.0.0.1')}:"
        f"{params.get('port', 5432)}/{params['dbname']}")
    db = SQLAlchemy(app)

    class User(db.Model):
        __tablename__ = "users"
        id = db.Column(db.Integer, primary_key=True)
        email = db.Column(db.String(60), unique=True, nullable=False)
        first_name = db.Column(db.String(60))
        last_name = db.Column(db.String(60))
        password_hash = db.Column(db.String(256))
        last_login_at = db.Column(db.DateTime)
        login_count = db.Column(db.Integer)

        @property
        def password(self) -> str:
            raise AttributeError("password is not readable")

        @password.setter
        def password(self, password: str) -> None:  # the tutorial's setter: Werkzeug's default method
            self.password_hash = generate_password_hash(password)

    with app.app_context():
        db.create_all()
        old = User(email="old@example.com", first_name="Olga", last_name="Old")
        old.password = PASSWORD  # scrypt (Werkzeug 3's default)
        legacy = User(email="legacy@example.com", first_name="Lee", last_name="Gacy",
                      password_hash=generate_password_hash(PASSWORD, method="pbkdf2:sha256"))
        mixed = User(email="Mixed.Case@Example.com", first_name="Max",  # stored before lower-casing
                     password_hash=generate_password_hash(PASSWORD))
        db.session.add_all([old, legacy, mixed])
        db.session.commit()
        db.engine.dispose()


@pytest.fixture
def flask_database(empty_database: str) -> str:
    """A database holding the Flask app's users, then migrated by dashgate."""
    flask_users_table(empty_database)
    store = Store(lambda: empty_database)
    store.migrate()
    store.close()
    return empty_database


def login(module, email: str, password: str) -> dict:
    event = make_event("POST", "/login/", json_body={"email": email, "password": password}, headers={"origin": ORIGIN})
    return module.lambda_handler(event, LambdaContext())


def test_migrations_keep_every_user_and_value(flask_database: str) -> None:
    with psycopg.connect(flask_database) as conn:
        rows = conn.execute("SELECT email, first_name, password_hash, login_count, created_at IS NOT NULL "
                            "FROM public.users ORDER BY id").fetchall()

    assert [r[0] for r in rows] == ["old@example.com", "legacy@example.com", "Mixed.Case@Example.com"]
    assert rows[0][2].startswith("scrypt:") and rows[1][2].startswith("pbkdf2:sha256:")
    assert [r[3] for r in rows] == [None, None, None] and all(r[4] for r in rows)


@pytest.mark.parametrize(("email", "method"), [("old@example.com", "scrypt:"), ("legacy@example.com", "pbkdf2:"),
                                               ("mixed.case@example.com", "scrypt:")])
def test_werkzeug_hashes_sign_in_and_move_to_argon2id(load, flask_database: str, email: str, method: str) -> None:
    module = load("login", DATABASE_URL=flask_database)

    wrong = login(module, email, "not the password")
    with psycopg.connect(flask_database) as conn:
        unchanged = conn.execute("SELECT password_hash FROM public.users WHERE lower(email) = %s",
                                 (email,)).fetchone()[0]
    right = login(module, email, PASSWORD)
    again = login(module, email, PASSWORD)

    assert wrong["statusCode"] == 401 and unchanged.startswith(method)
    assert right["statusCode"] == 200 and json.loads(right["body"])["user"]["email"].lower() == email
    assert again["statusCode"] == 200
    with psycopg.connect(flask_database) as conn:
        new_hash, count, last = conn.execute(
            "SELECT password_hash, login_count, last_login_at FROM public.users WHERE lower(email) = %s",
            (email,)).fetchone()
    assert new_hash.startswith("$argon2id$v=19$m=19456,t=2,p=1$")
    assert count == 2 and last is not None  # NULL counted as 0


def test_new_registrations_land_in_the_adopted_table(load, flask_database: str) -> None:
    register = load("register", DATABASE_URL=flask_database)
    long_email = "a" * 80 + "@example.com"  # longer than the Flask model's String(60): the column was widened
    body = {"email": long_email, "password": "a new password", "first_name": "New", "last_name": "User"}

    created = register.lambda_handler(make_event("POST", "/register/", json_body=body, headers={"origin": ORIGIN}),
                                      LambdaContext())
    taken = register.lambda_handler(make_event("POST", "/register/", json_body={**body, "email": "OLD@example.com"},
                                               headers={"origin": ORIGIN}), LambdaContext())
    taken_in_other_case = register.lambda_handler(make_event(
        "POST", "/register/", json_body={**body, "email": "mixed.case@example.com"}, headers={"origin": ORIGIN}),
        LambdaContext())

    assert created["statusCode"] == 201 and taken["statusCode"] == taken_in_other_case["statusCode"] == 409
    with psycopg.connect(flask_database) as conn:
        assert conn.execute("SELECT count(*) FROM public.users").fetchone()[0] == 4
