"""Options and output helpers shared by the subcommands."""
from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from .. import config as config_mod
from ..config import Config


def add_config_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", type=Path, help="TOML configuration file")
    p.add_argument("--data-dir", type=Path, help="journal and spool directory (default ./svdmark-data)")


def add_json_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="machine-readable output")


def load_config(args: argparse.Namespace, **flags: Any) -> Config:
    return config_mod.load(getattr(args, "config", None), data_dir=getattr(args, "data_dir", None), **flags)


def emit(args: argparse.Namespace, data: Any, human: str) -> None:
    print(json.dumps(data, indent=2, default=str) if getattr(args, "json", False) else human)
