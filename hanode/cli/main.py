"""`hanode`: run a node, run the replica simulator, run the demo, check a config."""

from __future__ import annotations

import argparse
import sys

from hanode import __version__


def _cmd_run(args: argparse.Namespace) -> int:
    from hanode.config import ConfigError, load_config
    from hanode.daemon import run_node
    from hanode.logs import configure_logging
    from hanode.runtime import run

    configure_logging(args.log_level, json=args.log_format == "json")
    try:
        config = load_config(args.config)
    except ConfigError as exc:
        print(f"hanode: invalid configuration:\n{exc}", file=sys.stderr)
        return 2
    from hanode.daemon import StartupError

    try:
        return run(
            run_node(
                config,
                insecure_dev=args.insecure_dev,
                log_level=args.log_level,
                log_json=args.log_format == "json",
            )
        )
    except StartupError as exc:
        print(f"hanode: cannot start: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"hanode: cannot start: {exc}", file=sys.stderr)
        return 1


def _cmd_check_config(args: argparse.Namespace) -> int:
    from hanode.config import ConfigError, load_config

    try:
        config = load_config(args.config)
    except ConfigError as exc:
        print(f"hanode: invalid configuration:\n{exc}", file=sys.stderr)
        return 2
    from hanode.daemon import listen_conflicts

    conflicts = listen_conflicts(config)
    if conflicts:
        print("hanode: invalid configuration:\n" + "\n".join(conflicts), file=sys.stderr)
        return 2
    print(f"{args.config}: ok ({len(config.replicas)} replicas)")
    return 0


def _cmd_certs(args: argparse.Namespace) -> int:
    from pathlib import Path

    from hanode.security.certs import CertError, init_ca, issue_node

    directory = Path(args.dir)
    try:
        if args.certs_command == "init":
            files = init_ca(directory)
        else:
            files = issue_node(directory, args.name, args.host)
    except CertError as exc:
        print(f"hanode certs: {exc}", file=sys.stderr)
        return 1
    print(f"wrote {files.cert} and {files.key} (the key with mode 0600)")
    return 0


def _cmd_sim(args: argparse.Namespace) -> int:
    from hanode.sim.cli import main as sim_main

    return sim_main(args)


def _cmd_demo(args: argparse.Namespace) -> int:
    from hanode.cli.demo import main as demo_main

    rc: int = demo_main(args)
    return rc


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hanode", description="High availability for AI inference endpoints."
    )
    parser.add_argument("--version", action="version", version=f"hanode {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run a hanode node")
    run.add_argument("--config", required=True, help="path to the TOML configuration")
    run.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    run.add_argument("--log-format", default="json", choices=["json", "console"])
    run.add_argument(
        "--insecure-dev",
        action="store_true",
        help="allow a cluster without [cluster].secret_file (Raft without a password; dev only)",
    )
    run.set_defaults(func=_cmd_run)

    check = sub.add_parser("check-config", help="validate a configuration file and exit")
    check.add_argument("config")
    check.set_defaults(func=_cmd_check_config)

    certs = sub.add_parser("certs", help="a small CA and node certificates for TLS")
    certs.add_argument("--dir", default="/etc/hanode/tls", help="where the CA and certs live")
    csub = certs.add_subparsers(dest="certs_command", required=True)
    csub.add_parser("init", help="create ca.crt and ca.key")
    node = csub.add_parser("node", help="create NAME.crt and NAME.key signed by the CA")
    node.add_argument("name", metavar="NAME", help="the node's name (a SAN of its certificate)")
    node.add_argument(
        "--host",
        action="append",
        default=[],
        help="an address or DNS name the node is reached at (repeat; 127.0.0.1 for hanodectl on "
        "the host itself)",
    )
    certs.set_defaults(func=_cmd_certs)

    from hanode.sim.cli import add_arguments as add_sim_arguments

    sim = sub.add_parser("sim", help="run a simulated vLLM-like replica")
    add_sim_arguments(sim)
    sim.set_defaults(func=_cmd_sim)

    demo = sub.add_parser("demo", help="run the scripted failure-and-recovery tour")
    demo.add_argument("--workdir", default=None, help="where to keep configs and logs")
    demo.set_defaults(func=_cmd_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    rc: int = args.func(args)
    return rc


if __name__ == "__main__":
    sys.exit(main())
