"""`annlab`: the command line. `annlab keys create NAME [--admin]` prints a new API key (the
only time it is shown), `annlab keys revoke NAME`, `annlab keys list`. Reads the same settings
as the service (DATABASE_URL, ANNLAB_HOME), on a migrated database (`make migrate`)."""

import argparse
import sys

from sqlalchemy.exc import OperationalError, ProgrammingError

from core import keys
from core.db import session_scope
from core.settings import get_settings


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="annlab", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    key_commands = commands.add_parser("keys", help="API keys").add_subparsers(
        dest="action", required=True
    )
    create = key_commands.add_parser("create", help="make a key and print it")
    create.add_argument("name", help="the owner of what the key creates")
    create.add_argument("--admin", action="store_true", help="sees and manages everything")
    revoke = key_commands.add_parser("revoke", help="the key stops working at once")
    revoke.add_argument("name")
    key_commands.add_parser("list", help="active keys (names, never the keys)")
    args = parser.parse_args(argv)

    url = get_settings().database_url
    try:
        with session_scope(url) as session:
            if args.action == "create":
                try:
                    key = keys.create(session, args.name, admin=args.admin)
                except ValueError as exc:
                    print(f"annlab: {exc}", file=sys.stderr)
                    return 2
                print(key)
                print(
                    f"a key for {args.name!r}{' (admin)' if args.admin else ''}; it is not "
                    "shown again. Send it as Authorization: Bearer <key>",
                    file=sys.stderr,
                )
            elif args.action == "revoke":
                if not keys.revoke(session, args.name):
                    print(f"annlab: no active key named {args.name!r}", file=sys.stderr)
                    return 1
            else:
                for row in keys.active(session):
                    admin = "admin" if row.admin else ""
                    print(f"{row.name}\t{row.created_at:%Y-%m-%d %H:%M}\t{admin}".rstrip())
    except (OperationalError, ProgrammingError) as exc:
        print(
            f"annlab: the database is not ready ({exc.orig}); run `make migrate`", file=sys.stderr
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
