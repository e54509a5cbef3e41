"""``supportctl demo seed``: realistic demo data, written through the storage layer.

Customers open requests about their accounts, payments and the app; staff
answer, take ownership, resolve, close; some customers come back and reopen.
Every step goes through ``SupportDesk``, so the data obeys the lifecycle and
has the same messages and events the API would write. Admins get the UUIDs
``--as-admin NAME`` derives, and customers are ``--as`` subjects, so the CLI
can act as any of them afterwards.
"""

from __future__ import annotations

import asyncio
import json
import random
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

from support_requests.cli.local import database_url
from support_requests.cli.operator import DatabaseUrl, database_error, run_on_database, shown_url
from support_requests.cli.render import fail, make_console, status_text
from support_requests.cli.tokens import admin_id_for

if TYPE_CHECKING:
    from support_requests.domain.principal import Principal
    from support_requests.storage.support_desk import SupportDesk

app = typer.Typer(help="Demo data for trying the CLI and the apps.", no_args_is_help=True)

FIRST_NAMES = [
    "Alex", "Dana", "Maria", "Tom", "Yuki", "Omar", "Lena", "Ravi", "Chloe", "Mateo",
    "Hannah", "Kofi", "Ines", "Noah", "Sofia", "Arjun", "Emma", "Felix", "Zara", "Leo",
]  # fmt: skip
LAST_NAMES = [
    "Kim", "Garcia", "Novak", "Okafor", "Schmidt", "Haddad", "Rossi", "Larsen", "Silva",
    "Nguyen", "Brennan", "Iyer", "Dubois", "Cohen", "Yamamoto", "Andersen", "Costa", "Reyes",
]  # fmt: skip
STAFF_NAMES = ["Sam Rivera", "Priya Natarajan", "Jonas Berg", "Mei Tanaka", "Lucas Moreau"]
DEVICES = [
    "Android 14 on a Pixel 8",
    "iOS 17.4 on an iPhone 13",
    "Android 13 on a Galaxy S22",
    "iPadOS 17 on an iPad Air",
    "iOS 16 on an iPhone SE",
]
APP_VERSIONS = ["4.1.0", "4.1.2", "4.2.0", "4.2.1"]


@dataclass(frozen=True)
class Topic:
    """A kind of problem: how the customer puts it, and how staff answer and resolve it."""

    subject: str
    opening: str
    answer: str
    resolution: str


TOPICS: dict[str, list[Topic]] = {
    "account": [
        Topic(
            "Unable to log in",
            "I cannot log in on {device} since this morning. It says my password is wrong, "
            "but I reset it twice.",
            "Sorry about that. I have cleared the lock on your account; please try again "
            "and tell me what you see.",
            "The account was locked after too many attempts; the lock is cleared.",
        ),
        Topic(
            "Password reset email never arrives",
            "I asked for a password reset three times and no email came, not even in spam.",
            "Thanks for waiting. Our mail provider was delaying messages to your domain; "
            "I have sent a new link.",
            "Reset emails to the customer's domain were delayed; resent by hand.",
        ),
        Topic(
            "Can't change my email address",
            "When I change my email in Settings on {device} the app just spins forever.",
            "We found the cause: the change needs a confirmed phone number. I have sent "
            "you the steps.",
            "Email change needs a confirmed phone; steps sent.",
        ),
        Topic(
            "Two-factor code not accepted",
            "Every code from my authenticator app is rejected. My phone's clock is right.",
            "I have reset two-factor for your account; set it up again from Settings > Security.",
            "Two-factor enrolment was reset.",
        ),
    ],
    "payment": [
        Topic(
            "Charged twice for one order",
            "My card was charged twice for the same order yesterday. Can you refund one?",
            "You are right, the second charge was a duplicate. The refund is on its way.",
            "Duplicate charge refunded; 3 to 5 working days to appear.",
        ),
        Topic(
            "Refund not received",
            "You confirmed a refund two weeks ago but I still do not see it on my statement.",
            "The refund left us on the 4th; here is the reference your bank can trace.",
            "Refund reference sent to the customer.",
        ),
        Topic(
            "Card declined at checkout",
            "My card works everywhere else but the app says 'declined' at checkout on {device}.",
            "Your bank asked for 3-D Secure and the app did not show it. Version 4.2.1 "
            "fixes this; please update and try again.",
            "Fixed in app version 4.2.1 (3-D Secure prompt).",
        ),
        Topic(
            "Subscription renewed after I cancelled",
            "I cancelled my subscription last month but was billed again today.",
            "The cancellation did not reach the app store. I have cancelled it and "
            "refunded this month.",
            "Subscription cancelled and the renewal refunded.",
        ),
    ],
    "technical": [
        Topic(
            "App crashes on checkout",
            "The app crashes every time I tap 'Pay' on {device}, app version {version}.",
            "Thanks, we can reproduce it and are working on a fix.",
            "Fixed in app version 4.2.1.",
        ),
        Topic(
            "Push notifications stopped",
            "I no longer get any notifications on {device}, although they are on in Settings.",
            "Could you sign out and in again? That renews the notification token.",
            "Signing in again renewed the push token.",
        ),
        Topic(
            "Photos fail to upload",
            "Uploading a photo to a request fails with 'network error' on wifi and mobile data.",
            "Large photos hit a limit on our side. We have raised it; please try again.",
            "Upload limit raised to 20 MB.",
        ),
        Topic(
            "Sync stuck at 99%",
            "Since updating to {version} the sync bar stays at 99% forever.",
            "A stuck item blocked your sync; I removed it on our side.",
            "Removed a corrupt item that blocked sync.",
        ),
    ],
    "other": [
        Topic(
            "Feature request: export to CSV",
            "Could you add a way to export my order history as CSV?",
            "Great idea, I have passed it to the product team.",
            "Logged as a feature request.",
        ),
        Topic(
            "Question about data privacy",
            "Which of my data do you keep, and for how long?",
            "Our privacy notice lists each kind of data and how long we keep it; "
            "I have sent you the link.",
            "Privacy notice sent.",
        ),
        Topic(
            "Larger text in the app",
            "The text is too small for me even with the biggest system font on {device}.",
            "The next release follows the system font size everywhere. Thanks for telling us.",
            "Dynamic type support ships in 4.3.",
        ),
    ],
}
CUSTOMER_FOLLOW_UPS = [
    "Any news on this?",
    "It happened again just now.",
    "Here is a screenshot description: the button stays grey and nothing happens.",
    "I tried again after updating, same result.",
]
CUSTOMER_THANKS = ["Thanks, that worked!", "Perfect, thank you.", "All good now, thanks."]
CUSTOMER_REOPENS = [
    "Sorry, it is back again this morning.",
    "That did not fix it for me, unfortunately.",
]
# How a request's story goes after it is opened, and how often.
STORIES = {
    "waiting": 25,
    "answered": 25,
    "resolved": 20,
    "closed": 15,
    "reopened": 10,
    "handed over": 5,
}


@dataclass(frozen=True)
class SeedResult:
    """What ``seed`` wrote."""

    customers: list[Principal]
    admins: list[Principal]
    statuses: Counter[str]


def _customers(count: int, rng: random.Random) -> list[Principal]:
    from support_requests.domain.lifecycle import Actor
    from support_requests.domain.principal import Principal

    people: list[Principal] = []
    taken: set[str] = set()
    for _ in range(count):
        # The sub is the name, so that ``--as NAME`` acts as this very customer.
        name = f"{rng.choice(FIRST_NAMES)} {rng.choice(LAST_NAMES)}"
        for _attempt in range(20):
            if name not in taken:
                break
            name = f"{rng.choice(FIRST_NAMES)} {rng.choice(LAST_NAMES)}"
        sub, n = name, 1
        while sub in taken:
            n += 1
            sub = f"{name} {n}"
        taken.add(sub)
        slug = sub.lower().replace(" ", "-")
        picture = f"https://cdn.example.com/avatars/{slug}.png" if rng.random() < 0.6 else None
        people.append(Principal(sub=sub, role=Actor.CUSTOMER, name=sub, picture=picture))
    return people


def _staff(count: int) -> list[Principal]:
    from support_requests.domain.lifecycle import Actor
    from support_requests.domain.principal import Principal

    return [
        Principal(sub=admin_id_for(name), role=Actor.ADMIN, name=name, picture=None)
        for name in STAFF_NAMES[:count]
    ]


async def _one_request(
    desk: SupportDesk,
    rng: random.Random,
    customer: Principal,
    staff: list[Principal],
) -> str:
    category = rng.choice(list(TOPICS))
    topic = rng.choice(TOPICS[category])
    details = {"device": rng.choice(DEVICES), "version": rng.choice(APP_VERSIONS)}
    record = await desk.create_request(
        customer, category=category, subject=topic.subject, message=topic.opening.format(**details)
    )
    request_id = record.row.id
    story = rng.choices(list(STORIES), weights=list(STORIES.values()))[0]
    agent = rng.choice(staff)
    if story == "waiting":
        if rng.random() < 0.4:
            record = await desk.reply_as_customer(
                customer, request_id, rng.choice(CUSTOMER_FOLLOW_UPS)
            )
        return str(record.row.status)
    record = await desk.reply_as_admin(agent, request_id, topic.answer)
    if story == "answered":
        if rng.random() < 0.5:
            record = await desk.reply_as_customer(
                customer, request_id, rng.choice(CUSTOMER_FOLLOW_UPS)
            )
        return str(record.row.status)
    if story == "handed over":
        other = rng.choice([admin for admin in staff if admin is not agent] or staff)
        record = await desk.update(agent, request_id, {"assignedAdminId": other.sub})
        return str(record.row.status)
    record = await desk.update(
        agent, request_id, {"status": "resolved", "resolutionNote": topic.resolution}
    )
    if story == "closed":
        await desk.reply_as_customer(customer, request_id, rng.choice(CUSTOMER_THANKS))
        record = await desk.update(agent, request_id, {"status": "closed"})
    elif story == "reopened":
        record = await desk.reply_as_customer(customer, request_id, rng.choice(CUSTOMER_REOPENS))
    return str(record.row.status)


async def seed(
    url: str,
    *,
    customers: int,
    requests: int,
    admins: int,
    rng: random.Random,
    advance: Callable[[], None],
) -> SeedResult:
    """Write ``requests`` requests from ``customers`` customers, worked by ``admins`` staff.

    The schema must be current: the command migrates an empty database first.
    """
    from support_requests.storage.database import Database
    from support_requests.storage.support_desk import SupportDesk

    database = Database(url, pool_size=2)
    try:
        desk = SupportDesk(database)
        people = _customers(customers, rng)
        staff = _staff(admins)
        for admin in staff:  # the service knows an admin once it has seen them act
            await desk.list_admins(admin)
        statuses: Counter[str] = Counter()
        for _ in range(requests):
            statuses[await _one_request(desk, rng, rng.choice(people), staff)] += 1
            advance()
        return SeedResult(people, staff, statuses)
    finally:
        await database.dispose()


@app.command("seed")
def seed_command(
    customers: Annotated[int, typer.Option(metavar="N", help="How many customers.", min=1)] = 10,
    requests: Annotated[
        int,
        typer.Option(
            metavar="M", help="How many support requests in all, spread over the customers.", min=0
        ),
    ] = 50,
    admins: Annotated[
        int,
        typer.Option(
            metavar="N", help="How many staff members work them.", min=1, max=len(STAFF_NAMES)
        ),
    ] = 3,
    random_seed: Annotated[
        int | None,
        typer.Option("--seed", metavar="INT", help="Random seed, for the same data every time."),
    ] = None,
    url: DatabaseUrl = None,
    json_output: Annotated[
        bool, typer.Option("--json", help="Print who and what was created as JSON.")
    ] = False,
) -> None:
    """Fill the database with realistic customers, staff and support requests."""
    from sqlalchemy.exc import SQLAlchemyError

    from support_requests.storage import schema

    target = database_url(url)
    # An empty database gets the schema; an out-of-date one is refused with the fix.
    run_on_database(target, lambda u: schema.ensure_current(u, initialise_empty=True))
    rng = random.Random(random_seed)
    console = make_console(stderr=True)
    progress = Progress(
        TextColumn("Seeding support requests"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
    )
    task = progress.add_task("seed", total=requests)
    try:
        with progress:
            result = asyncio.run(
                seed(
                    target,
                    customers=customers,
                    requests=requests,
                    admins=admins,
                    rng=rng,
                    advance=lambda: progress.advance(task),
                )
            )
    except ValueError as exc:
        fail(str(exc))
    except (SQLAlchemyError, OSError) as exc:
        fail(f"cannot seed {shown_url(target)}: {database_error(exc)}")
    if json_output:
        document = {
            "database": shown_url(target),
            "customers": [{"id": c.sub, "name": c.name} for c in result.customers],
            "admins": [{"id": a.sub, "name": a.name} for a in result.admins],
            "requests": dict(sorted(result.statuses.items())),
        }
        typer.echo(json.dumps(document))
        return
    _summary(result, target)


def _summary(result: SeedResult, target: str) -> None:
    console = make_console()
    total = sum(result.statuses.values())
    console.print(Text(f"Seeded {total} support requests in {shown_url(target)}.", style="bold"))
    table = Table("Status", "Requests", box=None, pad_edge=False)
    for name, count in sorted(result.statuses.items()):
        table.add_row(status_text(name), str(count))
    console.print(table)
    staff = result.admins[0].name or ""
    someone = result.customers[0].sub
    console.print(
        Text(
            f"Staff: {', '.join(a.name or a.sub for a in result.admins)}.\n"
            f"Work the queue as one of them:  supportctl --as-admin '{staff}' admin queue\n"
            f"See a customer's requests:     supportctl --as '{someone}' mobile list"
        )
    )
