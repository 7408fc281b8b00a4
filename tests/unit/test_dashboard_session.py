"""The dashboard's session cookie: who logged in, as whom, until when, and nothing forged."""

from __future__ import annotations

from freight.dashboard import session as login

SECRET = "server-secret"


def test_a_session_names_the_key_and_the_person_whatever_the_name_holds() -> None:
    cookie = login.issue(SECRET, "12", "Ana Dev. (ops) ü", now=1000)
    found = login.read(SECRET, cookie, now=1000 + login.LIFETIME - 1)
    assert found == login.Session("12", "Ana Dev. (ops) ü", 1000 + login.LIFETIME)
    assert login.read(SECRET, login.issue(SECRET, login.ADMIN, now=1000), now=1000) == (
        login.Session(login.ADMIN, "", 1000 + login.LIFETIME)
    )


def test_a_forged_stale_or_foreign_cookie_is_no_session() -> None:
    cookie = login.issue(SECRET, "12", "ana", now=1000)
    key, name, expires, signature = cookie.split(".")
    bob = login.issue(SECRET, "12", "bob", now=1000).split(".")[1]
    assert login.read(SECRET, f"{key}.{bob}.{expires}.{signature}", now=1000) is None
    assert login.read(SECRET, f"1.{name}.{expires}.{signature}", now=1000) is None
    assert login.read(SECRET, cookie, now=1000 + login.LIFETIME + 1) is None
    assert login.read("another-secret", cookie, now=1000) is None
    assert login.read(SECRET, "12.1000.deadbeef", now=1000) is None


def test_forms_carry_a_token_bound_to_the_session() -> None:
    cookie = login.issue(SECRET, "12", "ana")
    token = login.csrf_token(SECRET, cookie)
    assert login.csrf_ok(SECRET, cookie, token)
    assert not login.csrf_ok(SECRET, login.issue(SECRET, "13", "ana"), token)
    assert not login.csrf_ok(SECRET, cookie, None) and not login.csrf_ok(SECRET, None, token)
