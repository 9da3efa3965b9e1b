"""Checks on the command line that Hydra would otherwise answer with a multi-line error.

Hydra reports an unknown key (`model.n_layers=3`), an unknown group option (`model=huge`) or an
unparsable override with several lines and exit status 1. These checks run before Hydra does
and turn each of them into the project's one-line error with exit status 2.
"""

from __future__ import annotations

import difflib
import re
from pathlib import Path

from transfer_lab.errors import ConfigError, exit_with

CONF_DIR = Path(__file__).resolve().parents[2] / "conf"
# Hydra flags that take no value; any other flag (--cfg, --config-name, ...) means: leave it to Hydra
PLAIN_FLAGS = ("-m", "--multirun")
NOT_GROUPS = ("hydra",)  # Hydra's own groups come from its plugins, not from conf/


def available(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF_DIR / group).glob("*.yaml"))


def config_groups() -> list[str]:
    """Top-level config groups: the folders of conf/ (data/corpus holds corpus specs, not a group)."""
    return sorted(p.name for p in CONF_DIR.iterdir() if p.is_dir() and p.name not in NOT_GROUPS)


def check_group_options(argv: list[str]) -> None:
    """`experiment=nope` → one line naming the shipped options, exit status 2."""
    groups = config_groups()
    for arg in argv:
        key, _, value = arg.partition("=")
        group = key.lstrip("+~")
        if group not in groups or not value:
            continue
        for name in value.split(","):
            if name and name != "null" and name not in available(group):
                exit_with(ConfigError(f"{group}={name} is unknown; choose one of {', '.join(available(group))} "
                                      f"(files in conf/{group}/)"))


def _leaf_keys(node, prefix: str = "") -> list[str]:
    from omegaconf import OmegaConf

    keys = []
    if OmegaConf.is_dict(node):
        for key in node.keys():
            full = f"{prefix}{key}"
            keys.append(full)
            child = node._get_node(key)
            if OmegaConf.is_dict(child):
                keys.extend(_leaf_keys(child, f"{full}."))
    return keys


def _first_values(overrides: list[str]) -> list[str]:
    """The overrides with each sweep (a,b,c / range(...) / choice(...)) replaced by its first value."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    single = []
    for override in OverridesParser.create().parse_overrides(overrides):
        key = override.get_key_element()
        if override.is_sweep_override():
            first = next(iter(override.sweep_string_iterator()), None)
            if first is None:
                raise ConfigError(f"{override.input_line} sweeps over nothing; give at least one value")
            single.append(f"{key}={first}")
        elif override.is_delete() and override.value() is None:
            single.append(key)
        else:
            single.append(override.input_line)
    return single


def _parse_error(err: Exception, overrides: list[str]) -> ConfigError:
    """Name the override Hydra's grammar rejects (its own message does not say which one)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import OverrideParseException

    parser = OverridesParser.create()
    culprit = None
    for override in overrides:
        try:
            parser.parse_overrides([override])
        except OverrideParseException:
            culprit = override
            break
    detail = " ".join(str(err).split()).split(" See https://")[0]
    where = f"'{culprit}'" if culprit else "the command line"
    return ConfigError(f"cannot parse {where} ({detail}); write overrides as key=value and quote values "
                       "that hold spaces, brackets or commas, e.g. 'optim.betas=[0.9,0.95]'")


def _compose_error(err: Exception, overrides: list[str], config_name: str) -> ConfigError:
    """Hydra's multi-line composition error → one line naming the key and the fix."""
    text = str(err)
    cause = err.__cause__ or err.__context__
    cause_text = str(cause) if cause is not None else ""
    match = re.search(r"Could not override '([^']+)'", text)
    if match and "not in struct" in (text + cause_text):
        key = match.group(1)
        known = _known_keys(config_name, overrides)
        close = difflib.get_close_matches(key, known, n=3, cutoff=0.6)
        hint = f"did you mean {' or '.join(close)}? " if close else ""
        return ConfigError(f"{key} is not a key of the {config_name} config; {hint}fix the spelling, "
                           f"or use +{key}=... to add a new key")
    match = re.search(r"Could not append to config\. An item is already at '([^']+)'", text)
    if match:
        key = match.group(1)
        return ConfigError(f"+{key} adds a key that already exists; use {key}=... (without +) to change it")
    lines = [line.strip() for line in text.splitlines() if line.strip() and "HYDRA_FULL_ERROR" not in line]
    message = " ".join(lines) or type(err).__name__
    return ConfigError(f"the command line cannot be composed into a config: {message}; "
                       "fix the override (see conf/ for the keys and groups)")


def _known_keys(config_name: str, overrides: list[str]) -> list[str]:
    """Every key of the config composed with only the group choices among `overrides`."""
    groups = set(config_groups())
    choices = [o for o in overrides if "=" in o and o.partition("=")[0].lstrip("+~") in groups]
    try:
        return _leaf_keys(_compose(config_name, choices))
    except Exception:  # noqa: BLE001 - a hint only
        return []


def _compose(config_name: str, overrides: list[str]):
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            return compose(config_name, overrides=overrides)
    finally:
        GlobalHydra.instance().clear()


def check_overrides(argv: list[str], config_name: str = "train") -> None:
    """Compose the config from the command line (first value of each sweep) as Hydra will; an
    unknown key, a bad group option or an unparsable override exits with one line, status 2.

    Command lines with Hydra flags other than -m/--multirun are left to Hydra."""
    if any(arg.startswith("-") and arg not in PLAIN_FLAGS for arg in argv):
        return
    overrides = [arg for arg in argv if arg not in PLAIN_FLAGS]
    from hydra.errors import HydraException, OverrideParseException
    from omegaconf.errors import OmegaConfBaseException

    try:
        single = _first_values(overrides)
    except ConfigError as err:
        exit_with(err)
    except OverrideParseException as err:
        exit_with(_parse_error(err, overrides))
    try:
        cfg = _compose(config_name, single)
    except (HydraException, OmegaConfBaseException) as err:
        exit_with(_compose_error(err, single, config_name))
    check_output_root(cfg)
    if config_name == "train":  # Hydra makes sweeps/<sweep>/hydra/ before any job could refuse the name
        from transfer_lab.study.validate import check_sweep_name

        try:
            check_sweep_name(cfg.sweep)
        except ConfigError as err:
            exit_with(err)
    check_devices(cfg, overrides)


def check_devices(cfg, overrides: list[str]) -> None:
    """trainer.devices other than 1 is one line naming this very command with one job per device
    (study/devices.py says why), before Hydra or Lightning starts anything."""
    from omegaconf import OmegaConf

    from transfer_lab.study import devices as several

    asked = OmegaConf.select(cfg, "trainer.devices", default=1)
    nodes = OmegaConf.select(cfg, "trainer.num_nodes", default=None)
    from_argv = any(o.lstrip("+").startswith("trainer.devices=") for o in overrides)
    command = several.per_device_command(overrides, several.devices_asked(asked), from_argv)
    try:
        several.check_one_device(asked, nodes if isinstance(nodes, int) else None, command)
    except ConfigError as err:
        exit_with(err)


def check_output_root(cfg) -> None:
    """paths.output_root must be a folder this process can create and write: Hydra makes its log
    folder there before any of our code runs, and would answer with a traceback."""
    import os
    import tempfile

    from omegaconf import OmegaConf

    raw = OmegaConf.select(cfg, "paths.output_root", default=None)
    if raw is None:
        return
    root = Path(str(raw)).expanduser()
    fix = "point it at a folder you can write, e.g. paths.output_root=outputs (or set TRANSFER_LAB_OUTPUTS)"
    if root.exists() and not root.is_dir():
        exit_with(ConfigError(f"paths.output_root={raw} is a file, not a folder; {fix}"))
    try:
        root.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(dir=root, prefix=".write-check-")
        os.close(fd)
        os.unlink(probe)
    except OSError as err:
        exit_with(ConfigError(f"paths.output_root={raw} is not a writable folder ({err.strerror or err}); {fix}"))


def check_experiment_override(argv: list[str]) -> None:
    """What train.py runs before Hydra: group options, unknown keys and parse errors (one line, exit 2)."""
    check_group_options(argv)
    check_overrides(argv, "train")


def check_sweep_cells(argv: list[str], limit: int = 1000) -> None:
    """Validate every cell of a multirun before the first one trains: a bad value in the last
    cell must not stop a sweep hours in. One line naming the cell, exit status 2."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from omegaconf import OmegaConf

    from transfer_lab.errors import UserError
    from transfer_lab.study import protocol
    from transfer_lab.study.validate import validate_config

    if not any(arg in PLAIN_FLAGS for arg in argv) or any(a.startswith("-") and a not in PLAIN_FLAGS for a in argv):
        return
    overrides = [arg for arg in argv if arg not in PLAIN_FLAGS]
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            first = compose("train", overrides=_first_values(overrides), return_hydra_config=True)
            params = OmegaConf.to_container(first.hydra.sweeper.params) or {}
            lines = protocol.experiment_params(params, overrides) + overrides
            try:
                cells = protocol.expand(protocol.sweep_dimensions(lines))
            except ValueError as err:
                exit_with(ConfigError(f"{err}"))
            shared, corpora = [], set()
            for cell in cells[:limit]:
                cfg = compose("train", overrides=cell.overrides)
                try:
                    validate_config(cfg)
                except UserError as err:
                    exit_with(ConfigError(f"sweep cell [{' '.join(cell.overrides)}]: {err}"))
                shared.append((cell, OmegaConf.to_container(cfg.tokenizer, resolve=True), str(cfg.data.source)))
                corpora.add(str(cfg.data.target))
                if isinstance(cfg.data.source, str):
                    corpora.add(cfg.data.source)
            try:
                protocol.check_shared_tokenizer(shared)
            except ValueError as err:
                exit_with(ConfigError(str(err)))
            _check_files_corpora(corpora)
            warn_unreadable_records(Path(str(first.paths.sweep_dir)))
    finally:
        GlobalHydra.instance().clear()


def warn_unreadable_records(sweep_dir: Path) -> list[Path]:
    """Every existing record of the sweep is read before the first job trains: a torn or invalid
    one is a warning line here, and its job sets it aside and trains the run again."""
    import os
    import sys

    from transfer_lab.errors import ResultsError
    from transfer_lab.study import records

    unreadable = []
    # each run folder's record by name: a glob would skip a symbolic-link loop, which "does not exist"
    runs = sorted((sweep_dir / "runs").iterdir()) if (sweep_dir / "runs").is_dir() else []
    for path in [run / records.RESULTS_FILE for run in runs if os.path.lexists(run / records.RESULTS_FILE)]:
        try:
            records.read_result(path.parent)
        except ResultsError as err:
            unreadable.append(path)
            reason = " ".join(str(err).split()).split("; delete")[0]
            print(f"warning: {reason}; its run will be trained again (the file is kept beside it)", file=sys.stderr)
    return unreadable


def _check_files_corpora(names: set[str]) -> None:
    """Your own files (kind: files) are read once before the first job: a binary or missing file
    is one line here, not one line per parallel worker after training began."""
    from transfer_lab.data.corpora import load_corpus_spec
    from transfer_lab.data.corpora.files import checked_files
    from transfer_lab.errors import UserError

    for name in sorted(names):
        try:
            spec = load_corpus_spec(name)
            if spec.get("kind") == "files":
                checked_files(spec)
        except UserError as err:
            exit_with(err)
