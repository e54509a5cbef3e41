"""A verified token is remembered until its exp, and not a moment longer."""

from __future__ import annotations

import time

from tests.helpers import MOBILE, bearer, mint


def test_a_remembered_token_is_refused_once_it_expires(client):
    token = bearer(mint(ttl=2))
    assert client.get(MOBILE, headers=token).status_code == 200
    assert client.get(MOBILE, headers=token).status_code == 200
    time.sleep(2.1)
    response = client.get(MOBILE, headers=token)
    assert response.status_code == 401
    assert response.headers["www-authenticate"].startswith("Bearer")


def test_a_remembered_token_still_gets_its_role_checked(client):
    token = bearer(mint(role="admin", sub="6f1c2d3e-0000-4000-8000-00000000000a"))
    assert client.get("/api/admin/admins", headers=token).status_code == 200
    assert client.get(MOBILE, headers=token).status_code == 403
