"""``jobctl``: kubectl's habits for kvraft jobs.

Global flags: ``--endpoints`` (or ``$JOBCTL_ENDPOINTS``), ``--user``, ``--password``,
``--request-timeout-s``, and TLS as etcdctl: ``--cacert --cert --key
--insecure-skip-tls-verify`` (or ``$JOBCTL_CACERT`` ...). Exit codes: 0 ok, 1 a user or server error (message on stderr),
2 bad usage (argparse), 130 interrupted (Ctrl-C; ``get jobs -w`` ends so with 0), 141 when
stdout is a pipe whose reader has gone (``| head``), as a process killed by SIGPIPE."""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from typing import TextIO

from agent.confcheck import discovered_endpoints
from kvraft.client import ClientError, SyncClient, TLSConfig
from kvraft.client.completion import complete_files
from scheduler.cli import (
    apply,
    cancel,
    completion,
    cordon,
    describe,
    execute,
    get,
    logs,
    report,
    requeue,
    submit,
    suspend,
    top,
    update,
    wait,
)
from scheduler.cli.common import CliError

__all__ = ["build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="jobctl", description="submit and inspect jobs on a kvraft cluster")
    p.add_argument("--endpoints", default=os.environ.get("JOBCTL_ENDPOINTS", "127.0.0.1:2379"))
    p.add_argument("-d", "--discovery-srv", default=os.environ.get("JOBCTL_DISCOVERY_SRV", ""),
                   help="domain whose _etcd-client(-ssl)._tcp SRV records give the endpoints (as etcdctl -d)")
    p.add_argument("--discovery-srv-name", default=os.environ.get("JOBCTL_DISCOVERY_SRV_NAME", ""),
                   help="service name suffix of those records (_etcd-client-NAME._tcp)")
    p.add_argument("--user", default=os.environ.get("JOBCTL_USER"))
    p.add_argument("--password", default=os.environ.get("JOBCTL_PASSWORD"))
    p.add_argument("--request-timeout-s", type=float, default=10.0)
    complete_files(
        p.add_argument("--cacert", default=os.environ.get("JOBCTL_CACERT"), help="CA bundle for kvraft's https"),
        p.add_argument("--cert", default=os.environ.get("JOBCTL_CERT"), help="client certificate"),
        p.add_argument("--key", default=os.environ.get("JOBCTL_KEY"), help="the client certificate's key"))
    p.add_argument("--insecure-skip-tls-verify", action="store_true",
                   default=os.environ.get("JOBCTL_INSECURE_SKIP_TLS_VERIFY", "").lower() in ("1", "true"))
    sub = p.add_subparsers(dest="verb", metavar="VERB")
    sub.required = True
    for module in (submit, apply, get, describe, logs, execute, wait, cancel, suspend, update, requeue, cordon, top,
                   report, completion):
        module.add_parser(sub)
    return p


def _parse(parser: argparse.ArgumentParser, argv: list[str]) -> argparse.Namespace:
    """As ``parse_args``, but ``jobctl exec ... -- COMMAND ARG...`` hands everything after the
    ``--`` to the command as it is (argparse takes ``-L`` there for an option of its own once
    an option such as ``--task`` came before)."""
    if "--" in argv:
        cut = argv.index("--")
        head = parser.parse_args(argv[:cut])
        if head.verb == "exec":
            head.argv = [*head.argv, *argv[cut + 1:]]
            return head
    return parser.parse_args(argv)


def main(argv: list[str] | None = None, out: TextIO | None = None) -> int:
    out = out or sys.stdout
    args = _parse(build_parser(), list(sys.argv[1:] if argv is None else argv))
    try:
        if getattr(args, "offline", None) is not None:  # (completion: no cluster needed)
            return int(args.offline(args, out))
        if getattr(args, "prepare", None) is not None:
            args.prepare(args)
            if getattr(args, "dry_run", None) == "client":  # (=server: run checks against the cluster)
                for d in args.docs:
                    out.write(f"job/{d['name']} valid (dry run)\n")
                return 0
        tls = TLSConfig.from_flags(args.cacert, args.cert, args.key, args.insecure_skip_tls_verify)
        if args.discovery_srv:  # (none found: --endpoints, as etcdctl; a failed lookup: the ValueError below)
            args.endpoints = ",".join(discovered_endpoints(args.discovery_srv, args.discovery_srv_name,
                                                           args.endpoints.split(",")))
        with SyncClient(args.endpoints.split(","), user=args.user, password=args.password,
                        request_timeout_s=args.request_timeout_s, tls=tls) as client:
            return int(args.run(args, client, out))
    except CliError as exc:
        print(str(exc), file=sys.stderr)
        return 1
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except ClientError as exc:
        print(f"error: kvraft at {args.endpoints}: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:  # Ctrl-C (jobctl wait, logs -f): the shell's 128 + SIGINT, no traceback
        return 130
    except BrokenPipeError:  # `jobctl describe job x | head`: the reader left; 128 + SIGPIPE, no traceback
        if out is sys.stdout:  # (and no second one when Python flushes stdout at exit)
            with contextlib.suppress(OSError, ValueError):
                os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141


if __name__ == "__main__":
    sys.exit(main())
