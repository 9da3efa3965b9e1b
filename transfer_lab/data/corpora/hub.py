"""Hub corpora (kind: hub): stream a public dataset until max_chars characters are kept.

Remote code is never run (no trust_remote_code). Needs network access to the hub; offline,
load_dataset fails and the error says so.
"""

from __future__ import annotations

from typing import Any, Iterator

from transfer_lab.errors import DataError


def _matches(record: dict[str, Any], where: dict[str, Any]) -> bool:
    for field, allowed in where.items():
        allowed = allowed if isinstance(allowed, list) else [allowed]
        if record.get(field) not in allowed:
            return False
    return True


def hub_items(spec: dict[str, Any]) -> tuple[Iterator[tuple], list[dict[str, Any]]]:
    info = {"from": "hub", "path": spec["path"], "config_name": spec["config_name"],
            "split": spec["split"], "revision": spec["revision"]}
    return _stream(spec), [info]


def _stream(spec: dict[str, Any]) -> Iterator[tuple]:
    import datasets

    kwargs = dict(spec["load_kwargs"])
    if spec["revision"]:
        kwargs["revision"] = spec["revision"]
    where = "" if not spec["config_name"] else f" (config {spec['config_name']})"
    try:
        stream = datasets.load_dataset(spec["path"], spec["config_name"], split=spec["split"],
                                       streaming=True, **kwargs)
        iterator = iter(stream)
    except Exception as err:  # offline, unknown id, gated dataset ...
        message = " ".join(str(err).split())[:300]
        raise DataError(f"cannot stream hub dataset '{spec['path']}'{where}: {message}; check "
                        "the dataset id, network access and HF_HUB_OFFLINE, or use an "
                        "embedded corpus") from err
    field = spec["text_field"]
    for record in iterator:
        if not _matches(record, spec["where"]):
            continue
        if field not in record:
            raise DataError(f"hub dataset '{spec['path']}' has no field '{field}' (fields: "
                            f"{sorted(record)}); set text_field in the corpus spec")
        text = record[field]
        if isinstance(text, str) and text:
            yield ("hub", "text", None, text, spec)
