"""supportctl: the mobile test client, the admin tool and the operator commands."""
