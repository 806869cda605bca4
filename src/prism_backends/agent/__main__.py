"""``python -m prism_backends.agent``: the reference agent without the rest of
the command, as guest images run it (they carry the agent and gRPC only)."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from pathlib import Path

from prism_backends.agent import config
from prism_backends.agent.client import Agent


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m prism_backends.agent")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--config", type=Path, help="the JSON of GET .../agent_config")
    source.add_argument("--env", type=Path, help="Cocos' environment file")
    arguments = parser.parse_args(argv)
    path, loader = (
        (arguments.env, config.load_environment)
        if arguments.env is not None
        else (arguments.config, config.load)
    )
    try:
        settings = loader(path)
    except config.AgentConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    level = {"warn": "warning"}.get(settings.log_level, settings.log_level)
    logging.basicConfig(
        level=level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    # Read again at every heartbeat: a renewed configuration is picked up in place.
    return asyncio.run(Agent(settings, reload=lambda: loader(path)).run())


if __name__ == "__main__":
    sys.exit(main())
