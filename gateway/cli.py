"""The `sip-push-gateway` command: run, check-config, instances, doctor.

Exit codes: 0 success, 1 runtime failure, 2 bad configuration or usage, 3 not found.
Nothing here ever prints a password, a secret or a full push token.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time

from gateway import __version__, config as configuration
from gateway.errors import ConfigError
from gateway.redact import shorten_token

EXIT_RUNTIME, EXIT_CONFIG, EXIT_NOT_FOUND = 1, 2, 3


def _parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--config",
        default=argparse.SUPPRESS,
        help=f"config file (default: $GATEWAY_CONFIG or {configuration.DEFAULT_PATH})",
    )
    parser = argparse.ArgumentParser(
        prog="sip-push-gateway",
        description="Keeps SIP registrations alive for sleeping phones and wakes them by push.",
        parents=[common],
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    commands.add_parser("run", parents=[common], help="start the gateway")
    commands.add_parser("check-config", parents=[common], help="check the config file and exit")
    instances = commands.add_parser("instances", parents=[common], help="inspect or erase instances")
    actions = instances.add_subparsers(dest="action", required=True, metavar="ACTION")
    actions.add_parser("list", parents=[common], help="one line per instance")
    show = actions.add_parser("show", parents=[common], help="one instance in full (no secrets)")
    show.add_argument("id")
    delete = actions.add_parser("delete", parents=[common], help="erase an instance now")
    delete.add_argument("id")
    doctor = commands.add_parser(
        "doctor", parents=[common],
        help="register one account with pjsua2 and with the gateway's engine, side by side")
    doctor.add_argument("--instance", help="use the account of this stored instance")
    doctor.add_argument("--aor", help="the account's address of record, sip:user@domain")
    doctor.add_argument("--username", help="the digest username (default: the AOR's user)")
    doctor.add_argument("--registrar", help="sip: or sips: URI of the registrar")
    doctor.add_argument("--proxy", default="", help="outbound proxy URI")
    doctor.add_argument("--expires", type=int, default=60, help="expiry to ask for (s)")
    doctor.add_argument("--password-env", metavar="VAR",
                        help="read the password from this environment variable "
                             "(default: a prompt, or one line on standard input)")
    doctor.add_argument("--password-file", metavar="PATH", help="read the password from a file")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        config = configuration.load(getattr(args, "config", None))
        if args.command == "check-config":
            return check_config(config, getattr(args, "config", None))
        if args.command == "doctor":
            return _doctor(config, args)
        if args.command == "run":
            from gateway.app import run

            return run(config)
        return asyncio.run(_instances(config, args))
    except ConfigError as exc:
        print(f"sip-push-gateway: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    except KeyboardInterrupt:
        return 130


def check_config(config: configuration.Config, path: str | None) -> int:
    """Beyond what decoding checks: the files the config names must be usable."""
    problems = configuration.check_files(config)
    for problem in problems:
        print(f"sip-push-gateway: {problem}", file=sys.stderr)
    if problems:
        return EXIT_CONFIG
    print(f"{path or configuration.DEFAULT_PATH}: OK ({len(config.apps)} app(s))")
    return 0


def _doctor(config: configuration.Config, args) -> int:
    from gateway import doctor

    if args.instance:
        from gateway.store import open_store

        store = open_store(config.store.path, config.store.key_file)
        rec = store.sync_get(args.instance)
        if rec is None:
            print(f"sip-push-gateway: no instance {args.instance}", file=sys.stderr)
            return EXIT_NOT_FOUND
        account = doctor.Account(
            aor=rec.aor, username=rec.auth_username,
            password=store.secret_box.open(rec.password_ct, rec.id.encode()),
            registrar=rec.registrar, outbound_proxy=rec.outbound_proxy or "",
            expires=args.expires)
    else:
        if not args.aor or not args.registrar:
            print("sip-push-gateway: doctor needs --instance, or --aor and --registrar",
                  file=sys.stderr)
            return EXIT_CONFIG
        account = doctor.Account(
            aor=args.aor, username=args.username or args.aor.split(":", 1)[-1].split("@")[0],
            password=_password(args), registrar=args.registrar, outbound_proxy=args.proxy,
            expires=args.expires)
    return doctor.run(account, config)


def _password(args) -> str:
    import os

    if args.password_env:
        value = os.environ.get(args.password_env)
        if value is None:
            raise ConfigError(f"--password-env: {args.password_env} is not set")
        return value
    if args.password_file:
        try:
            with open(args.password_file) as f:
                return f.readline().rstrip("\n")
        except OSError as exc:
            raise ConfigError(f"--password-file: {args.password_file}: {exc.strerror}") from None
    if sys.stdin.isatty():
        import getpass

        return getpass.getpass("SIP password: ")
    return sys.stdin.readline().rstrip("\n")


def _when(ts: float | None) -> str:
    if ts is None:
        return "-"
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))


async def _instances(config: configuration.Config, args) -> int:
    from gateway.store import open_store

    store = open_store(config.store.path, config.store.key_file)
    await store.open()
    try:
        if args.action == "list":
            rows = await store.list_instances()
            print(f"{'ID':24} {'APP':16} {'STATE':12} {'MODE':10} {'EXPIRES':20} AOR")
            for rec in rows:
                print(
                    f"{rec.id:24} {rec.app_id:16} {rec.state:12} {rec.mode:10} "
                    f"{_when(rec.expires_at):20} {rec.aor}"
                )
            print(f"{len(rows)} instance(s)")
            return 0
        rec = await store.get_instance(args.id)
        if rec is None:
            print(f"sip-push-gateway: no instance {args.id}", file=sys.stderr)
            return EXIT_NOT_FOUND
        if args.action == "show":
            print(describe(rec))
            return 0
        await store.erase_instance(rec.id)
        print(f"erased instance {rec.id}")
        return 0
    finally:
        await store.close()


def describe(rec) -> str:
    """An instance for an operator: everything but the credentials."""
    lines = [
        f"id:               {rec.id}",
        f"app:              {rec.app_id}",
        f"device:           {rec.device_id}",
        f"aor:              {rec.aor}",
        f"auth username:    {rec.auth_username}",
        f"registrar:        {rec.registrar}",
        f"outbound proxy:   {rec.outbound_proxy or '-'}",
        f"display name:     {rec.display_name or '-'}",
        f"mode:             {rec.mode}",
        f"state:            {rec.state}",
        f"last error:       {rec.last_error or '-'}",
        f"registered until: {_when(rec.registered_until)}",
        f"created:          {_when(rec.created_at)}",
        f"expires:          {_when(rec.expires_at)}",
        "push targets:",
    ]
    for target in rec.push:
        where = target.token or target.endpoint
        extra = f" {target.environment}" if target.environment else ""
        lines.append(f"  - {target.provider} {target.usage}{extra} {shorten_token(where)}")
    return "\n".join(lines)
