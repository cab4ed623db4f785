"""Class sets and description sets, as data.

A *description set* is a JSON file (format ``dferclip.descriptions/1``)::

    {
      "format": "dferclip.descriptions/1",
      "name": "dferclip-official-dfew",        # file stem; letters, digits, '-', '_', '.'
      "version": 1,                            # bumped on every save under the same name
      "class_set": "DFEW",                     # a name from class_sets.json, or "custom"
      "classes": [                             # in label order
        {"name": "happiness", "descriptions": ["a smiling mouth, ...", "..."]},
        ...
      ],
      "provenance": {"source": ..., "licence": ..., "generated_by": {"model", "prompt", "date"}, ...}
    }

A class may have several descriptions; they are ensembled when class embeddings are made.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Optional, Sequence

from ..errors import DescriptionError
from ..files import shipped_descriptions_dir, user_descriptions_dir, write_json

FORMAT = "dferclip.descriptions/1"
CLASS_SETS_FILE = Path(__file__).resolve().with_name("class_sets.json")  # package data, read-only
HISTORY_DIR = ".history"  # earlier versions of a user's saved sets, inside its folder
# Bounds of one set (shipped sets are far inside them): a set anyone can upload must stay cheap to encode.
MAX_CLASSES = 100
MAX_DESCRIPTIONS_PER_CLASS = 50
MAX_TEXT_CHARS = 1000  # a class name or one description (CLIP reads 77 tokens of it anyway)
MAX_FILE_BYTES = 1 << 20  # a description-set file
MAX_PROVENANCE_CHARS = 20_000
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")


def load_class_sets(path: Path | None = None) -> dict[str, list[str]]:
    data = json.loads((path or CLASS_SETS_FILE).read_text())
    return {k: list(v) for k, v in data["class_sets"].items()}


def class_set_for(num_classes: int) -> tuple[str, list[str]]:
    """The official class set with this many classes (7: DFEW/FERV39k order, 11: MAFW)."""
    for name, classes in load_class_sets().items():
        if len(classes) == num_classes:
            return name, classes
    raise DescriptionError(
        f"no built-in class set has {num_classes} classes (DFEW/FERV39k have 7, MAFW has 11); "
        "give the class descriptions explicitly"
    )


def validate_name(name: str) -> str:
    """A safe file stem: no path separators, no leading dot, bounded length."""
    if not isinstance(name, str) or not _NAME_RE.match(name) or ".." in name:
        raise DescriptionError(
            f"invalid description set name {name!r}: use 1-100 letters, digits, '-', '_' or '.', "
            "starting with a letter or digit"
        )
    return name


@dataclass
class DescriptionSet:
    classes: list[str]
    descriptions: list[list[str]]  # per class, one or more descriptions
    name: str = "custom"
    class_set: str = "custom"
    version: int = 1
    provenance: dict = field(default_factory=dict)

    def __post_init__(self):
        if not isinstance(self.classes, list) or not all(isinstance(c, str) for c in self.classes):
            raise DescriptionError("class names must be a list of strings")
        if not isinstance(self.descriptions, (list, tuple)):
            raise DescriptionError("descriptions must be a list per class")
        self.classes = [c.strip() for c in self.classes]
        if len(self.classes) > MAX_CLASSES:
            raise DescriptionError(f"{len(self.classes)} classes: a description set has at most {MAX_CLASSES}")
        if any(not c or len(c) > MAX_TEXT_CHARS for c in self.classes):
            raise DescriptionError(f"class names must be 1-{MAX_TEXT_CHARS} characters")
        if not isinstance(self.provenance, dict):
            raise DescriptionError("provenance must be an object")
        if len(json.dumps(self.provenance, ensure_ascii=False, default=str)) > MAX_PROVENANCE_CHARS:
            raise DescriptionError(f"provenance is longer than {MAX_PROVENANCE_CHARS} characters")
        if len(self.classes) != len(self.descriptions):
            raise DescriptionError(
                f"{len(self.classes)} classes but {len(self.descriptions)} description lists"
            )
        if len(set(self.classes)) != len(self.classes):
            raise DescriptionError("class names must be unique")
        if not self.classes:
            raise DescriptionError("a description set needs at least one class")
        cleaned = []
        for cls, descs in zip(self.classes, self.descriptions):
            if isinstance(descs, str):
                descs = [descs]
            if not isinstance(descs, (list, tuple)) or not all(isinstance(d, str) for d in descs):
                raise DescriptionError(f"class {cls[:60]!r}: descriptions must be strings")
            descs = [d.strip() for d in descs if d.strip()]
            if not descs:
                raise DescriptionError(f"class {cls[:60]!r} has no description")
            if len(descs) > MAX_DESCRIPTIONS_PER_CLASS:
                raise DescriptionError(f"class {cls[:60]!r} has {len(descs)} descriptions; at most "
                                       f"{MAX_DESCRIPTIONS_PER_CLASS} per class")
            if any(len(d) > MAX_TEXT_CHARS for d in descs):
                raise DescriptionError(f"class {cls[:60]!r}: a description is longer than {MAX_TEXT_CHARS} characters")
            cleaned.append(descs)
        self.descriptions = cleaned

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def first_descriptions(self) -> list[str]:
        return [d[0] for d in self.descriptions]

    def with_descriptions(self, descriptions: Sequence[Sequence[str] | str], **kw) -> "DescriptionSet":
        return DescriptionSet(
            classes=list(self.classes),
            descriptions=[[d] if isinstance(d, str) else list(d) for d in descriptions],
            name=kw.get("name", self.name),
            class_set=kw.get("class_set", self.class_set),
            version=kw.get("version", self.version),
            provenance=kw.get("provenance", dict(self.provenance)),
        )

    # --- (de)serialisation -------------------------------------------------------------------
    def fingerprint(self) -> str:
        """A hash of the classes and their descriptions (what class embeddings depend on)."""
        blob = json.dumps([self.classes, self.descriptions], ensure_ascii=False).encode()
        return hashlib.blake2b(blob, digest_size=12).hexdigest()

    def to_dict(self) -> dict:
        return {
            "format": FORMAT,
            "name": self.name,
            "version": self.version,
            "class_set": self.class_set,
            "classes": [{"name": c, "descriptions": list(d)} for c, d in zip(self.classes, self.descriptions)],
            "provenance": self.provenance,
        }

    @classmethod
    def from_dict(cls, data: dict) -> "DescriptionSet":
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise DescriptionError(f"not a description set (expected \"format\": \"{FORMAT}\")")
        items = data.get("classes")
        if not isinstance(items, list) or not all(isinstance(c, dict) for c in items):
            raise DescriptionError("malformed description set: \"classes\" must be a list of objects")
        if len(items) > MAX_CLASSES:
            raise DescriptionError(f"{len(items)} classes: a description set has at most {MAX_CLASSES}")
        try:
            classes = [c["name"] for c in items]
            descs = [c["descriptions"] for c in items]
        except KeyError as e:
            raise DescriptionError(f"malformed description set: missing {e}") from None
        name, class_set, version = data.get("name", "custom"), data.get("class_set", "custom"), data.get("version", 1)
        if not isinstance(class_set, str) or len(class_set) > 100:
            raise DescriptionError("malformed description set: \"class_set\" must be a short string")
        if isinstance(version, bool) or not isinstance(version, int) or not 0 < version < 10**9:
            raise DescriptionError("malformed description set: \"version\" must be a positive integer")
        return cls(
            classes=classes,
            descriptions=descs,
            name=validate_name(name),
            class_set=class_set,
            version=version,
            provenance=data.get("provenance") or {},
        )


def shipped_names() -> set[str]:
    """Names no saved set may take: the shipped sets (:func:`dferclip.files.shipped_descriptions_dir`) and
    ``class_sets`` (the shipped class sets' file)."""
    return {p.stem for p in shipped_descriptions_dir().glob("*.json")} | {CLASS_SETS_FILE.stem}


def list_description_sets(folder: Path | None = None) -> list[str]:
    """The shipped sets, then the user's (``folder``, default :func:`dferclip.files.user_descriptions_dir`)."""
    folder = Path(folder) if folder is not None else user_descriptions_dir()
    shipped = sorted(shipped_names() - {CLASS_SETS_FILE.stem})
    own = sorted(p.stem for p in folder.glob("*.json") if p.stem not in shipped_names()) if folder.is_dir() else []
    return shipped + own


def load_description_set(name_or_path: str | Path, folder: Path | None = None) -> DescriptionSet:
    """A set by name (shipped sets first, then ``folder``) or by the path of a ``.json`` file."""
    p = Path(name_or_path)
    if p.suffix != ".json":
        name = validate_name(str(name_or_path))
        p = shipped_descriptions_dir() / f"{name}.json"
        if name == CLASS_SETS_FILE.stem or not p.is_file():
            p = (Path(folder) if folder is not None else user_descriptions_dir()) / f"{name}.json"
    if not p.is_file():
        raise DescriptionError(
            f"no description set {str(name_or_path)!r}; available: {', '.join(list_description_sets(folder))}"
        )
    return read_description_file(p)


def read_description_file(path: str | Path) -> DescriptionSet:
    """A description-set file, checked: at most :data:`MAX_FILE_BYTES`, UTF-8 JSON, the format's types."""
    p = Path(path)
    size = p.stat().st_size
    if size > MAX_FILE_BYTES:
        raise DescriptionError(f"{p.name} is {size / 1e6:.1f} MB; a description set file is at most "
                               f"{MAX_FILE_BYTES // 1024} kB")
    try:
        data = json.loads(p.read_bytes().decode("utf-8"))
    except UnicodeDecodeError:
        raise DescriptionError(f"{p.name} is not UTF-8 text") from None
    except (json.JSONDecodeError, RecursionError) as e:
        raise DescriptionError(f"{p.name} is not valid JSON: {str(e)[:100]}") from None
    return DescriptionSet.from_dict(data)


def official_descriptions(num_classes: int, prefix: str = "dferclip-official") -> DescriptionSet:
    """The official descriptions for a 7-class (DFEW) or 11-class (MAFW) model: DFER-CLIP's, or another
    family's shipped sets named ``<prefix>-dfew`` / ``<prefix>-mafw`` (EmoCLIP: "emoclip-official")."""
    name, _ = class_set_for(num_classes)
    return load_description_set(f"{prefix}-{name.lower()}")


def save_description_set(ds: DescriptionSet, folder: Path | None = None) -> Path:
    """Write ``<folder>/<name>.json`` atomically. A shipped set's name is refused. Saving under a name that
    exists keeps the earlier file as ``<folder>/.history/<name>.v<version>.json`` and bumps the version, so
    nothing saved is ever lost."""
    folder = Path(folder) if folder is not None else user_descriptions_dir()
    validate_name(ds.name)
    if ds.name in shipped_names():
        raise DescriptionError(f"{ds.name!r} is a shipped set's name and cannot be saved over; pick another name")
    target = folder / f"{ds.name}.json"
    if target.exists():
        try:
            previous = int(json.loads(target.read_text(encoding="utf-8")).get("version", 0))
        except (json.JSONDecodeError, OSError, UnicodeDecodeError, AttributeError, TypeError, ValueError):
            previous = 0
        history = folder / HISTORY_DIR
        history.mkdir(parents=True, exist_ok=True)
        keep = history / f"{ds.name}.v{previous}.json"
        n = 1
        while keep.exists():
            keep, n = history / f"{ds.name}.v{previous}.{n}.json", n + 1
        try:
            os.link(target, keep)  # the earlier version stays reachable whatever happens next
        except OSError:
            shutil.copy2(target, keep)
        ds.version = previous + 1
    write_json(target, ds.to_dict())
    return target


def diff_description_sets(a: DescriptionSet, b: DescriptionSet) -> list[dict]:
    """Per class: which descriptions were removed from ``a`` and added in ``b``."""
    rows = []
    for cls in list(dict.fromkeys(list(a.classes) + list(b.classes))):
        da = a.descriptions[a.classes.index(cls)] if cls in a.classes else []
        db = b.descriptions[b.classes.index(cls)] if cls in b.classes else []
        removed = [d for d in da if d not in db]
        added = [d for d in db if d not in da]
        if removed or added:
            rows.append({"class": cls, "removed": removed, "added": added})
    return rows


def as_description_set(
    descriptions: Optional["DescriptionSet | Iterable | str | Path"], num_classes: int,
    official: str = "dferclip-official",
) -> DescriptionSet:
    """Normalise what callers pass (None, a set, a name/path, a list) into a DescriptionSet; None and a bare list
    take the classes (and for None the texts) of the ``official`` sets (see :func:`official_descriptions`)."""
    if descriptions is None:
        return official_descriptions(num_classes, official)
    if isinstance(descriptions, DescriptionSet):
        ds = descriptions
    elif isinstance(descriptions, (str, Path)):
        ds = load_description_set(descriptions)
    else:
        items = list(descriptions)
        ds = official_descriptions(num_classes, official).with_descriptions(items) if len(items) == num_classes else None
        if ds is None:
            raise DescriptionError(f"{len(items)} descriptions given for a {num_classes}-class model")
    if ds.num_classes != num_classes:
        raise DescriptionError(
            f"description set {ds.name!r} has {ds.num_classes} classes, the model has {num_classes}"
        )
    return ds
