from tests.helpers import MOBILE, create, customer


def test_create_then_read_back(client):
    alice = customer()
    created = create(client, alice)
    response = client.get(f"{MOBILE}/{created['id']}", headers=alice)
    assert response.status_code == 200
    assert response.json()["data"] == created
