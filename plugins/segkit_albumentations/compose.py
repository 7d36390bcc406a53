"""``AlbumentationsCompose``: any albumentations pipeline as one recipe op.

A recipe op this plugin adds to segkit's vocabulary (entry point ``segkit.ops``:
``AlbumentationsCompose``), run by the albumentations loader only. A recipe file names it
like any op::

    [[train]]
    op = "AlbumentationsCompose"
    transform = "augs.json"   # written by albumentations.save(compose, path)

Other loaders refuse it in one line naming this one (it declares ``loaders``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, ClassVar

# The package's __init__ (imported first, as a submodule's parent) sets
# NO_ALBUMENTATIONS_UPDATE before this import, so albumentations asks no package index.
import albumentations as A
import yaml

from segkit.errors import ConfigError
from segkit.recipes import Op

__all__ = ["AlbumentationsCompose"]


class AlbumentationsCompose(Op):
    """Any ``albumentations.Compose``, run as one op by the albumentations loader only.

    ``transform`` is the Compose itself, a dict from ``A.to_dict``, or the path of a file
    ``A.save`` wrote (JSON or YAML; in a recipe file, relative to that file). It is kept
    serialized, so a run folder records it and ``evaluate``, ``predict`` and ``--resume``
    rebuild it without the file. The transform gets uint8 HWC images and the mask, and
    must leave them so: segkit's own Normalize still ends the recipe (a Compose holding
    ``Normalize`` or ``ToTensorV2`` is refused).
    """

    geometric: ClassVar[bool] = True
    loaders: ClassVar[tuple[str, ...] | None] = ("albumentations",)

    def __init__(self, transform: Any, p: float = 1.0) -> None:
        self.transform = _serialized_compose(transform)
        self.p = p
        Op.__post_init__(self)

    def __setattr__(self, name: str, value: Any) -> None:
        if name in self.__dict__:
            raise AttributeError(f"AlbumentationsCompose.{name} is read-only")
        object.__setattr__(self, name, value)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, AlbumentationsCompose) and (self.transform, self.p) == (
            other.transform,
            other.p,
        )

    def __hash__(self) -> int:
        return hash(("AlbumentationsCompose", self.p, repr(self.transform)))

    def __repr__(self) -> str:
        names = [t.get("__class_fullname__", "?") for t in _compose_items(self.transform)]
        return f"AlbumentationsCompose([{', '.join(names)}], p={self.p})"

    def params(self) -> dict[str, Any]:
        return {"transform": self.transform, "p": self.p}

    @classmethod
    def parameter_types(cls) -> dict[str, Any]:
        # transform is whatever _serialized_compose accepts; it checks it itself.
        return {"transform": Any, "p": float}

    @classmethod
    def file_parameters(cls, params: dict[str, Any], folder: Path) -> dict[str, Any]:
        """A transform file named in a recipe file is read relative to that file and
        replaced by its contents, so a run records the transform itself, not a path."""
        transform = params.get("transform")
        if not isinstance(transform, str):
            return params
        file = Path(transform)
        return {
            **params,
            "transform": _serialized_compose(file if file.is_absolute() else folder / file),
        }

    def compose(self) -> Any:
        """The live ``albumentations.Compose``."""
        return A.from_dict(self.transform)


def _compose_items(spec: dict[str, Any]) -> list[dict[str, Any]]:
    inner = spec.get("transform", spec)
    return list(inner.get("transforms", [])) if isinstance(inner, dict) else []


def _serialized_compose(transform: Any) -> dict[str, Any]:
    if isinstance(transform, str | Path):
        path = Path(transform)
        if not path.is_file():
            raise ConfigError(
                f"AlbumentationsCompose: {path} does not exist; expected a file written by "
                "albumentations.save(compose, path) (JSON or YAML)"
            )
        text = path.read_text()
        try:
            if path.suffix.lower() in (".yaml", ".yml"):
                spec = yaml.safe_load(text)
            else:
                spec = json.loads(text)
        except Exception as e:  # json.JSONDecodeError, yaml.YAMLError
            raise ConfigError(f"AlbumentationsCompose: {path} does not parse: {e}") from None
        source = str(path)
    elif isinstance(transform, dict):
        spec, source = transform, "the dict given"
    else:
        try:
            spec = A.to_dict(transform)
        except Exception as e:
            raise ConfigError(
                f"AlbumentationsCompose: cannot serialize {type(transform).__name__} "
                f"({e}); pass an albumentations.Compose, its A.to_dict() or a saved file"
            ) from None
        source = f"the {type(transform).__name__} given"
    if not isinstance(spec, dict) or "transform" not in spec:
        raise ConfigError(
            f"AlbumentationsCompose: {source} is not a serialized albumentations transform "
            "(no 'transform' key); write one with albumentations.save(compose, path)"
        )
    try:
        A.from_dict(spec)
    except Exception as e:
        raise ConfigError(
            f"AlbumentationsCompose: albumentations cannot rebuild {source}: {e}"
        ) from None
    banned = {"Normalize", "ToTensorV2", "ToTensor"}
    found = [
        t.get("__class_fullname__", "")
        for t in _walk_transforms(spec["transform"])
        if t.get("__class_fullname__", "").rsplit(".", 1)[-1] in banned
    ]
    if found:
        raise ConfigError(
            f"AlbumentationsCompose: {source} holds {', '.join(found)}; segkit's own "
            "Normalize ends every recipe and turns images into tensors, so leave them out"
        )
    return spec


def _walk_transforms(t: Any) -> list[dict[str, Any]]:
    if not isinstance(t, dict):
        return []
    out = [t]
    for child in t.get("transforms", []) or []:
        out += _walk_transforms(child)
    return out
