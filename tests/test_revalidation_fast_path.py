"""The detail poll's fast path answers as the normal path would, 304 aside.

``conditional.Revalidation`` answers a current poll before routing, with the normal
path's own id parsing, parameter validator, bearer parsing, token verification and
role check. So a poll with ``If-None-Match: *`` is a 304 exactly where the same GET
without it is a 200, and otherwise gets the same status as that GET.
"""

from __future__ import annotations

import logging
from typing import Any

import pytest

from tests.helpers import ADMIN, MOBILE, create, customer, known_admin


def _spellings(id_: int) -> list[str]:
    digits = str(id_)
    return [
        digits,
        "0" + digits,
        digits.rjust(20, "0"),
        digits.rjust(21, "0"),
        digits.rjust(30, "0"),
        "+" + digits,
        "-" + digits,
        digits + ".0",
        digits.translate(str.maketrans("0123456789", "٠١٢٣٤٥٦٧٨٩")),
        "0",
        "9223372036854775808",
    ]


def _authorizations(token: str) -> list[str]:
    return [f"Bearer {token}", f"bearer  {token}", f"Bearer\t{token}", f"Bearer {token} "]


@pytest.mark.parametrize("base", [MOBILE, ADMIN])
def test_a_poll_is_304_exactly_where_the_plain_get_is_200(client: Any, base: str) -> None:
    owner = customer()
    admin = known_admin(client)
    id_ = create(client, owner)["id"]
    caller = owner if base == MOBILE else admin
    token = caller["Authorization"].split()[1]

    outcomes = set()
    for spelling in _spellings(id_):
        for authorization in _authorizations(token):
            url, headers = f"{base}/{spelling}", {"Authorization": authorization}
            plain = client.get(url, headers=headers).status_code
            polled = client.get(url, headers={**headers, "If-None-Match": "*"}).status_code
            assert polled == (304 if plain == 200 else plain), (spelling, authorization)
            outcomes.add(plain)
    assert outcomes >= {200, 400, 401}


def test_a_fast_304_is_logged_and_counted_like_the_plain_get(
    client: Any, caplog: pytest.LogCaptureFixture
) -> None:
    owner = customer(sub="fast-path-subject")
    url = f"{MOBILE}/{create(client, owner)['id']}"
    plain = client.get(url, headers=owner)
    caplog.set_level(logging.INFO, logger="support_requests.access")
    caplog.clear()

    polled = client.get(url, headers={**owner, "If-None-Match": plain.headers["etag"]})

    assert polled.status_code == 304
    remaining = int(plain.headers["ratelimit-remaining"])
    assert int(polled.headers["ratelimit-remaining"]) == remaining - 1
    [line] = [r.fields for r in caplog.records if r.name == "support_requests.access"]
    assert line["route"] == "/api/mobile/support-requests/{id}"
    assert line["sub"] == "fast-path-subject"
    assert line["status"] == 304
