"""Pages: the HTML forms and messages, escaped, with one small stylesheet and no scripts."""

from __future__ import annotations

from html import escape

STYLE = """
*{box-sizing:border-box}body{margin:0;font:16px/1.5 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;
background:#f3f5f8;color:#1d2433}main{max-width:26rem;margin:8vh auto;padding:2rem;background:#fff;
border-radius:12px;box-shadow:0 4px 24px rgba(20,30,60,.08)}h1{margin:0 0 1.25rem;font-size:1.5rem}
label{display:block;font-weight:600;margin:.9rem 0 .3rem}input[type=email],input[type=password],input[type=text]{
width:100%;padding:.6rem .7rem;border:1px solid #c5ccd8;border-radius:8px;font:inherit}
input:focus{outline:2px solid #3b6fe0;border-color:#3b6fe0}.check{display:flex;gap:.5rem;align-items:center;
font-weight:400}.check input{width:auto}button{margin-top:1.4rem;width:100%;padding:.7rem;border:0;
border-radius:8px;background:#3b6fe0;color:#fff;font:inherit;font-weight:600;cursor:pointer}
button:hover{background:#2c58bd}.error{color:#b42318;font-size:.9rem;margin:.25rem 0 0}
.flash{padding:.7rem .9rem;border-radius:8px;background:#e7f6ec;color:#14532d;margin:0 0 1rem}
.alert{padding:.7rem .9rem;border-radius:8px;background:#fdecea;color:#8a1c12;margin:0 0 1rem}
.alt{margin-top:1.25rem;text-align:center;font-size:.95rem}a{color:#3b6fe0}
@media (max-width:30rem){main{margin:0;min-height:100vh;border-radius:0;box-shadow:none}}
"""


def layout(title: str, body: str) -> str:
    """A complete page."""
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{escape(title)}</title><style>{STYLE}</style></head>"
        f"<body><main><h1>{escape(title)}</h1>{body}</main></body></html>"
    )


def notices(messages: list[str], alert: str | None = None) -> str:
    """Flashed messages (shown once) and the page's own alert."""
    html = "".join(f'<p class="flash" role="status">{escape(m)}</p>' for m in messages)
    if alert:
        html += f'<p class="alert" role="alert">{escape(alert)}</p>'
    return html


def field(name: str, label: str, kind: str, value: str = "", *, error: str | None = None,
          autocomplete: str = "") -> str:
    """A labelled input with its error beside it."""
    described = f' aria-invalid="true" aria-describedby="{name}-error"' if error else ""
    keep = f' value="{escape(value)}"' if kind != "password" and value else ""
    auto = f' autocomplete="{autocomplete}"' if autocomplete else ""
    html = (f'<label for="{name}">{escape(label)}</label>'
            f'<input id="{name}" name="{name}" type="{kind}"{keep}{auto}{described} required>')
    if error:
        html += f'<p class="error" id="{name}-error">{escape(error)}</p>'
    return html


def hidden(name: str, value: str) -> str:
    """A hidden input."""
    return f'<input type="hidden" name="{name}" value="{escape(value)}">'


def register_page(csrf_token: str, messages: list[str], *, values: dict[str, str] | None = None,
                  errors: dict[str, str] | None = None, alert: str | None = None) -> str:
    """The registration form."""
    values, errors = values or {}, errors or {}
    fields = "".join([
        field("email", "Email", "email", values.get("email", ""), error=errors.get("email"), autocomplete="email"),
        field("first_name", "First name", "text", values.get("first_name", ""), error=errors.get("first_name"),
              autocomplete="given-name"),
        field("last_name", "Last name", "text", values.get("last_name", ""), error=errors.get("last_name"),
              autocomplete="family-name"),
        field("password", "Password", "password", error=errors.get("password"), autocomplete="new-password"),
        field("password_confirm", "Repeat password", "password", error=errors.get("password_confirm"),
              autocomplete="new-password"),
    ])
    body = (f'{notices(messages, alert)}<form method="post" action="/register/" novalidate>'
            f'{hidden("csrf_token", csrf_token)}{fields}<button type="submit">Register</button></form>'
            '<p class="alt">Already registered? <a href="/login/">Log in</a></p>')
    return layout("Register", body)


def login_page(csrf_token: str, messages: list[str], *, next_url: str, values: dict[str, str] | None = None,
               errors: dict[str, str] | None = None, alert: str | None = None) -> str:
    """The login form; `next` rides along in a hidden field."""
    values, errors = values or {}, errors or {}
    checked = " checked" if values.get("remember_me") else ""
    email = field("email", "Email", "email", values.get("email", ""), error=errors.get("email"),
                  autocomplete="username")
    password = field("password", "Password", "password", error=errors.get("password"),
                     autocomplete="current-password")
    body = (f'{notices(messages, alert)}<form method="post" action="/login/" novalidate>'
            f'{hidden("csrf_token", csrf_token)}{hidden("next", next_url)}{email}{password}'
            f'<label class="check"><input type="checkbox" name="remember_me" value="y"{checked}> Remember me</label>'
            '<button type="submit">Log in</button></form>'
            '<p class="alt"><a href="/password/forgot/">Forgot your password?</a></p>'
            '<p class="alt">New here? <a href="/register/">Create an account</a></p>')
    return layout("Log in", body)


def logout_page(csrf_token: str) -> str:
    """Shown for a cross-site GET /logout/: signing out takes a click on this site."""
    body = ('<p>Do you want to log out?</p><form method="post" action="/logout/">'
            f'{hidden("csrf_token", csrf_token)}'
            '<label class="check"><input type="checkbox" name="everywhere" value="1"> Log out on every device</label>'
            '<button type="submit">Log out</button></form>'
            '<p class="alt"><a href="/">Stay signed in</a></p>')
    return layout("Log out", body)


def form_page(title: str, action: str, csrf_token: str, inner: str, button: str, *, messages: list[str] = (),
              alert: str | None = None, after: str = "") -> str:
    """A page with one POST form: notices, the CSRF token, the fields (`inner`) and a button."""
    body = (f'{notices(list(messages), alert)}<form method="post" action="{escape(action)}" novalidate>'
            f'{hidden("csrf_token", csrf_token)}{inner}<button type="submit">{escape(button)}</button></form>{after}')
    return layout(title, body)


def forgot_page(csrf_token: str, messages: list[str], *, email: str = "", errors: dict[str, str] | None = None,
                alert: str | None = None) -> str:
    """Ask for a password reset link."""
    inner = ('<p>Enter the address you registered with, and we will email you a link to choose a new password.</p>'
             + field("email", "Email", "email", email, error=(errors or {}).get("email"), autocomplete="email"))
    return form_page("Forgot your password?", "/password/forgot/", csrf_token, inner, "Send me a link",
                     messages=messages, alert=alert, after='<p class="alt"><a href="/login/">Back to log in</a></p>')


def new_password_fields(errors: dict[str, str]) -> str:
    """The new password, twice."""
    return (field("password", "New password", "password", error=errors.get("password"), autocomplete="new-password")
            + field("password_confirm", "Repeat new password", "password", error=errors.get("password_confirm"),
                    autocomplete="new-password"))


def reset_page(csrf_token: str, messages: list[str], *, errors: dict[str, str] | None = None,
               alert: str | None = None) -> str:
    """Choose a new password (the token rides in a cookie, never in the page)."""
    return form_page("Choose a new password", "/password/reset/", csrf_token, new_password_fields(errors or {}),
                     "Reset my password", messages=messages, alert=alert)


def change_page(csrf_token: str, messages: list[str], *, errors: dict[str, str] | None = None,
                alert: str | None = None) -> str:
    """Change the password of the signed-in user."""
    errors = errors or {}
    inner = field("current_password", "Current password", "password", error=errors.get("current_password"),
                  autocomplete="current-password") + new_password_fields(errors)
    return form_page("Change your password", "/password/change/", csrf_token, inner, "Change my password",
                     messages=messages, alert=alert)


def confirm_page(csrf_token: str, messages: list[str], *, token: str | None, alert: str | None = None) -> str:
    """Confirm the address with the emailed token (a button: a GET must change nothing), or, signed in
    without a token, ask for a new link."""
    if token is None:
        inner = "<p>We can email you a new link to confirm your address.</p>"
        return form_page("Confirm your email address", "/email/confirm/", csrf_token, inner,
                         "Send me a new link", messages=messages, alert=alert)
    return form_page("Confirm your email address", "/email/confirm/", csrf_token, hidden("token", token),
                     "Confirm my email address", messages=messages, alert=alert)


def message_page(title: str, message: str, link: tuple[str, str] = ("Home", "/")) -> str:
    """A page with one message and a way on (home, unless `link` names another (text, path))."""
    text, href = link
    return layout(title, f'<p>{escape(message)}</p><p class="alt"><a href="{escape(href)}">{escape(text)}</a></p>')
