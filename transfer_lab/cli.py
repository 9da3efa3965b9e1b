"""Checks on the command line that Hydra would otherwise answer with a multi-line error."""

from __future__ import annotations

from pathlib import Path

from transfer_lab.errors import ConfigError, exit_with

CONF_DIR = Path(__file__).resolve().parent.parent / "conf"


def available(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF_DIR / group).glob("*.yaml"))


def check_experiment_override(argv: list[str]) -> None:
    """`experiment=nope` → one line naming the shipped experiments, exit status 2."""
    for arg in argv:
        key, _, value = arg.partition("=")
        if key.lstrip("+~") not in ("experiment", "model", "tokenizer", "logger", "optim", "trainer"):
            continue
        group = key.lstrip("+~")
        for name in value.split(","):
            if name and name != "null" and name not in available(group):
                exit_with(ConfigError(f"{group}={name} is unknown; choose one of {', '.join(available(group))} "
                                      f"(files in conf/{group}/)"))
