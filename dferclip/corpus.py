"""Predict a whole corpus of clips: one output line per clip, resumable, sharded across processes.

    from dferclip.corpus import list_clips, predict_corpus
    summary = predict_corpus(model, list_clips("clips/"), "preds.jsonl")

Clips come from a folder (video files, recursively), a CSV list (a ``path`` column, or the first column;
relative paths are relative to the CSV), or ``hf:<Hub id or save_to_disk folder>[@split]`` (a video column,
or a ``path``/``video``/``file`` column). Decoding and face detection run in DataLoader worker processes
(:func:`dferclip.video.ingest.ingest`, the same path as one clip) while the model scores earlier clips in
batches (:func:`dferclip.predict.score_sequences`), as many clips a forward as fill the frames per tower call
that run fastest on this machine (:func:`dferclip.backends.frame_batch`, timed once and kept). Each clip gets one line, in ``.jsonl`` or ``.csv``:
its class probabilities and top class, whether a face was found, ingestion/model seconds, warnings, and
the error when it could not be read (one bad clip never stops the run).

Resuming: clips already in the output (or in part files of an interrupted sharded run) are skipped. Every
line names the model that wrote it (``model``: :func:`model_identity`); resuming with another model is refused
(lines without the field, from older versions, are taken as they are).
Each line is appended with one ``write`` on an ``O_APPEND`` file, so an interruption leaves whole lines
(an unfinished last line is ignored and its clip done again).

Sharding: under ``torchrun --nproc_per_node N -m dferclip predict ...`` rank r takes clips r::world and
appends to ``<output stem>.part<r><suffix>`` (on a shared file system across nodes); at the end rank 0 merges the parts
and any earlier output into ``<output>``, in clip order, atomically, and removes the parts.
"""
from __future__ import annotations

import csv
import functools
import io
import json
import logging
import os
import time
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Iterable, Optional, Sequence

from . import files
from .errors import DataError, DferclipError
from .progress import progress_counter
from .video.clips import VIDEO_EXTENSIONS
from .workers import fork_free_start, sigchld_kept

if TYPE_CHECKING:
    import torch

    from .video.decode import Limits

# torch, numpy and the decoder are imported where they are used: a resumed run with nothing left to do
# answers without them (python -m dferclip predict ... --output checks what is left before loading a model)

log = logging.getLogger(__name__)

FORMATS = (".jsonl", ".csv")
PATH_COLUMNS = ("path", "video", "file", "filename", "clip")
FIXED_COLUMNS = ("clip", "top", "face_found", "status", "error", "warnings", "ingestion_s", "model_s", "model")
FACE_COLUMNS = ("face", "face_main", "face_start_s", "face_end_s")  # with faces="all": one line per (clip, face)


@dataclass(frozen=True)
class ClipRef:
    """A clip to predict: ``key`` names it in the output (as listed), ``path`` is where its file is."""

    key: str
    path: Path


@dataclass
class CorpusSummary:
    output: Path
    listed: int  # clips in the list (all ranks)
    skipped: int  # of this rank's share, already in the output
    done: int  # predicted now by this rank
    errors: int
    no_face: int
    seconds: float
    backend: str = "eager"
    clips_per_forward: int = 0  # clips scored together, in one image-tower call on CPU

    @property
    def clips_per_s(self) -> float:
        return self.done / self.seconds if self.seconds > 0 else 0.0


# --- listing ---------------------------------------------------------------------------------
def list_clips(source: str | Path) -> list[ClipRef]:
    """The clips of a folder, a CSV list, one video file or ``hf:<name>[@split]`` (see the module docstring)."""
    s = str(source)
    if s.startswith("hf:"):
        return _hf_clips(s[3:])
    p = Path(s)
    if p.is_dir():
        found = sorted(f for f in p.rglob("*") if f.is_file() and f.suffix.lower() in VIDEO_EXTENSIONS
                       and not any(part.startswith(".") for part in f.relative_to(p).parts))
        if not found:
            raise DataError(f"no video files ({', '.join(VIDEO_EXTENSIONS)}) under {p}")
        return [ClipRef(str(f), f) for f in found]
    if p.is_file() and p.suffix.lower() == ".csv":
        return _csv_clips(p)
    if p.is_file():
        return [ClipRef(s, p)]
    raise DataError(f"no clips at {s!r}: expected a video file, a folder of videos, a .csv list or hf:<dataset>")


def _csv_clips(path: Path) -> list[ClipRef]:
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.reader(f))
    if not rows:
        raise DataError(f"{path} is empty")
    header = [c.strip().lower() for c in rows[0]]
    column = next((header.index(c) for c in PATH_COLUMNS if c in header), None)
    body = rows[1:] if column is not None else rows  # no known header: the first column of every row
    column = column or 0
    refs = []
    for n, row in enumerate(body, start=2 if body is not rows else 1):
        if not row or not row[column].strip():
            continue
        entry = row[column].strip()
        where = Path(entry) if Path(entry).is_absolute() else path.parent / entry
        refs.append(ClipRef(entry, where))
    if not refs:
        raise DataError(f"{path}: no clip paths (a 'path' column, or one path per line)")
    return refs


def _hf_clips(spec: str) -> list[ClipRef]:
    from .training.data import read_hf_dataset  # the one Hugging Face loader (datasets is optional)

    name, _, split = spec.partition("@")
    ds = read_hf_dataset(name, split or "train")
    import datasets

    column = next((c for c, f in ds.features.items() if isinstance(f, datasets.Video)), None)
    if column is not None:
        ds = ds.cast_column(column, datasets.Video(decode=False))
    else:
        column = next((c for c in PATH_COLUMNS if c in ds.column_names), None)
    if column is None:
        raise DataError(f"dataset {name!r} has no video column (a Video feature or one of {', '.join(PATH_COLUMNS)})")
    refs = []
    stored = files.cache_dir() / "hf-clips" / _safe_name(f"{name}@{split or 'train'}")
    for i, value in enumerate(ds[column]):
        key = f"hf:{name}@{split or 'train'}[{i}]"
        if isinstance(value, dict):  # a Video feature: a path, or the bytes themselves
            if value.get("path") and Path(value["path"]).is_file():
                refs.append(ClipRef(key, Path(value["path"])))
                continue
            if value.get("bytes"):
                target = stored / f"{i:08d}{Path(value.get('path') or 'clip.mp4').suffix or '.mp4'}"
                if not target.is_file():
                    with files.atomic_write(target, "wb") as f:
                        f.write(value["bytes"])
                refs.append(ClipRef(key, target))
                continue
            value = value.get("path") or ""
        refs.append(ClipRef(key, Path(str(value))))
    return refs


def _safe_name(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-_.@" else "_" for c in text)


# --- decoding and face detection in workers ---------------------------------------------------
@dataclass
class Ingested:
    """One clip after ingestion in a worker: the crops the model sees (T, S, S, 3) uint8 (a quarter of the
    float input's size through shared memory), or the error that stopped it."""

    key: str
    pixels: Optional[torch.Tensor]
    status: Optional[str] = None
    warnings: list = field(default_factory=list)
    seconds: float = 0.0
    error: Optional[str] = None
    faces: Optional[list] = None  # faces="all": per face track {"face", "face_main", "face_start_s", "face_end_s"},
    # its crops the face's T frames of ``pixels`` in turn


class IngestDataset:
    """Ingests clips (dferclip.video.ingest, as for one clip); failures become ``Ingested.error``. A map-style
    dataset for torch's DataLoader (``__len__`` and ``__getitem__``)."""

    def __init__(self, clips: Sequence[ClipRef], input_config, *, fallback: str = "center",
                 limits: Optional[Limits] = None, faces: str = "main"):
        from .video.decode import Limits

        self.faces = faces
        self.clips = list(clips)
        self.input_config = input_config
        self.fallback = fallback
        self.limits = limits or Limits()

    def __len__(self) -> int:
        return len(self.clips)

    def __getitem__(self, i: int) -> Ingested:
        import numpy as np
        import torch

        from .video.ingest import ingest_faces

        ref = self.clips[i]
        start = time.perf_counter()
        try:
            (results,) = ingest_faces(ref.path, [self.input_config], faces=self.faces, fallback=self.fallback,
                                      limits=self.limits)
        except Exception as e:  # a bad clip is recorded, never fatal
            log.debug("%s failed", ref.key, exc_info=True)
            message = e.message if isinstance(e, DferclipError) else str(e) or repr(e)
            return Ingested(ref.key, None, seconds=time.perf_counter() - start, error=f"{type(e).__name__}: {message}")
        pixels = torch.from_numpy(np.stack([np.asarray(c) for r in results for c in r.crops]))
        faces = None
        if self.faces == "all":
            faces = [{"face": r.track_id, "face_main": r.main if r.track_id is not None else None,
                      "face_start_s": None if r.span_s is None else round(r.span_s[0], 3),
                      "face_end_s": None if r.span_s is None else round(r.span_s[1], 3)} for r in results]
        return Ingested(ref.key, pixels, results[0].status, list(results[0].warnings), time.perf_counter() - start,
                        faces=faces)


def _worker_timeout(limits: Optional[Limits]) -> float:
    """Seconds the run waits for the workers' next clip before it stops with an error instead of hanging:
    well past one clip's decoding deadline plus its face detection."""
    return max(300.0, 5 * (limits.decode_timeout_s if limits else 60.0))


def _worker_init(_, yield_to_model: bool = False):
    import torch

    torch.set_num_threads(1)  # workers share the cores with the model; one thread each decodes best
    if yield_to_model:  # on a CPU the model is the bottleneck: decoding takes the cycles it leaves
        try:
            os.nice(10)
        except OSError:
            pass


# --- output ----------------------------------------------------------------------------------
class LineWriter:
    """Appends one record per clip to a .jsonl or .csv file; each line is a single O_APPEND write."""

    def __init__(self, path: Path, classes: Sequence[str], faces: bool = False):
        self.path = Path(path)
        self.kind = output_kind(path)
        self.columns = list(FIXED_COLUMNS[:1]) + list(FACE_COLUMNS if faces else ()) + list(FIXED_COLUMNS[1:]) + [
            f"p_{c}" for c in classes]
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if self.kind == ".csv":
            self._check_header()
        _drop_unfinished_line(self.path)
        self._fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        if self.kind == ".csv" and os.fstat(self._fd).st_size == 0:
            os.write(self._fd, self._csv_line(self.columns))

    def _check_header(self) -> None:
        if self.path.is_file() and self.path.stat().st_size:
            with open(self.path, newline="", encoding="utf-8") as f:
                header = next(csv.reader(f), [])
            if header != self.columns:
                raise DataError(f"{self.path} has other columns than this model's output (another model's "
                                f"classes, or one line per face against one per clip?): write to a new file")

    @staticmethod
    def _csv_line(values) -> bytes:
        buf = io.StringIO()
        csv.writer(buf, lineterminator="\n").writerow(values)
        return buf.getvalue().encode("utf-8")

    def append(self, record: dict) -> None:
        os.write(self._fd, self.encode(record))

    def append_all(self, records: Sequence[dict]) -> None:
        """Several lines in one write: a clip's faces are all in the output or none is."""
        os.write(self._fd, b"".join(self.encode(r) for r in records))

    def encode(self, record: dict) -> bytes:
        if self.kind == ".jsonl":
            return (json.dumps(record, ensure_ascii=False) + "\n").encode("utf-8")
        return self._csv_line([_csv_value(v) for v in flatten(record, self.columns)])

    def close(self) -> None:
        os.close(self._fd)

    def __enter__(self) -> "LineWriter":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _drop_unfinished_line(path: Path) -> None:
    """Cut an interrupted last line (no newline) so the next append starts a line of its own."""
    if not path.is_file():
        return
    with open(path, "rb+") as f:
        size = f.seek(0, os.SEEK_END)
        if size == 0:
            return
        f.seek(size - 1)
        if f.read(1) == b"\n":
            return
        keep = size
        while keep > 0:  # back to the last newline, in blocks
            start = max(0, keep - 65536)
            f.seek(start)
            block = f.read(keep - start)
            cut = block.rfind(b"\n")
            if cut >= 0:
                keep = start + cut + 1
                break
            keep = start
        log.warning("%s: dropping an unfinished last line (an interrupted run); its clip is done again", path)
        f.truncate(keep)


def output_kind(path: Path) -> str:
    kind = Path(path).suffix.lower()
    if kind not in FORMATS:
        raise DataError(f"output {path}: use a .jsonl or .csv file name")
    return kind


def flatten(record: dict, columns: Sequence[str]) -> list:
    """A record's CSV row in ``columns`` order."""
    probs = record.get("probabilities") or {}
    timings = record.get("timings") or {}
    values = {"clip": record["clip"], "top": record.get("top"), "face_found": record.get("face_found"),
              "status": record.get("status"), "error": record.get("error"),
              "warnings": " | ".join(record.get("warnings") or []), "ingestion_s": timings.get("ingestion"),
              "model_s": timings.get("model"), "model": record.get("model")}
    values |= {c: record.get(c) for c in FACE_COLUMNS}
    values |= {f"p_{c}": p for c, p in probs.items()}
    return [values.get(c) for c in columns]


def _csv_value(v):
    if v is None:
        return ""
    if isinstance(v, float):
        return repr(v)
    if isinstance(v, str):
        return " ".join(v.splitlines())  # one clip, one physical line
    return v


def read_records(path: Path) -> list[dict]:
    """The records of an output or part file (jsonl: as written; csv: rows as dicts). A broken last line
    (an interrupted write) is skipped."""
    path = Path(path)
    if not path.is_file():
        return []
    text = path.read_text(encoding="utf-8")
    if output_kind(path) == ".jsonl":
        out = []
        for line in text.splitlines():
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                log.warning("%s: skipping an unfinished line", path)
        return [r for r in out if isinstance(r, dict) and "clip" in r]
    rows = list(csv.DictReader(io.StringIO(text)))
    complete = text.endswith("\n")
    if rows and not complete:
        rows = rows[:-1]
    return [r for r in rows if r.get("clip")]


def part_path(output: Path, rank: int) -> Path:
    """Rank r's file in a sharded run: ``preds.part<r>.jsonl`` beside ``preds.jsonl``."""
    return output.with_name(f"{output.stem}.part{rank}{output.suffix}")


def _part_files(output: Path) -> list[Path]:
    return sorted(output.parent.glob(f"{output.stem}.part[0-9]*{output.suffix}"), key=lambda p: p.name)


def done_clips(output: Path) -> set[str]:
    """Clips already predicted: in the output or in part files of an unfinished sharded run."""
    return {r["clip"] for p in [output, *_part_files(output)] for r in read_records(p)}


def merge_parts(output: Path, order: Sequence[str]) -> Path:
    """Earlier output plus every part file -> ``output`` (each clip's lines once, listed clips in ``order``, clips
    of earlier lists first), written atomically; the part files are then removed."""
    output = Path(output)
    parts = _part_files(output)
    by_clip: dict[str, list[bytes]] = {}  # a clip's lines (one per face with faces="all") from the first file with it
    header = None
    for p in [output, *parts]:
        if not p.is_file():
            continue
        lines = p.read_bytes().splitlines(keepends=True)
        if output_kind(output) == ".csv" and lines:
            header, lines = header or lines[0], lines[1:]
        here: dict[str, list[bytes]] = {}
        for line, record in zip(lines, _parse_lines(lines, output)):
            if record is not None and line.endswith(b"\n"):
                here.setdefault(record["clip"], []).append(line)
        for clip, clip_lines in here.items():
            by_clip.setdefault(clip, clip_lines)
    rank = {k: i for i, k in enumerate(order)}
    ordered = sorted(by_clip, key=lambda k: (k in rank, rank.get(k, 0)))
    with files.atomic_write(output, "wb") as f:
        if header is not None:
            f.write(header)
        for k in ordered:
            f.writelines(by_clip[k])
    for p in parts:
        p.unlink(missing_ok=True)
    return output


def _parse_lines(lines: list[bytes], output: Path) -> Iterable[Optional[dict]]:
    for line in lines:
        try:
            if output_kind(output) == ".jsonl":
                yield json.loads(line)
            else:
                row = next(csv.reader([line.decode("utf-8")]))
                yield {"clip": row[0]} if row and row[0] else None
        except (json.JSONDecodeError, UnicodeDecodeError, StopIteration):
            yield None


# --- the run ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class Shard:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @classmethod
    def from_env(cls) -> "Shard":
        """torchrun's RANK / WORLD_SIZE / LOCAL_RANK (one process without them)."""
        env = os.environ
        return cls(int(env.get("RANK", 0)), int(env.get("WORLD_SIZE", 1)), int(env.get("LOCAL_RANK", 0)))


def shard_device(shard: Shard) -> "torch.device":
    """Each process of a sharded run on its own GPU (LOCAL_RANK), else the usual device. A numbered GPU is made
    the process's current device (``torch.cuda.set_device``) here, before any CUDA work: otherwise the current
    device stays cuda:0 and every rank also opens a CUDA context (and allocator) on GPU 0, as training's
    :func:`dferclip.training.train.setup_distributed` avoids too."""
    import torch

    from . import runtime

    dev = runtime.device()
    if dev.type == "cuda" and shard.world > 1 and dev.index is None:
        dev = torch.device("cuda", shard.local_rank % torch.cuda.device_count())
    if dev.type == "cuda" and dev.index is not None:
        torch.cuda.set_device(dev)
    return dev


def model_identity(model) -> str:
    """A short digest of what decides a model's outputs: architecture, class descriptions and weights (a
    sample of every tensor's values, as :func:`dferclip.scoring.model_fingerprint`; not where they were loaded
    from)."""
    import hashlib

    import torch

    h = hashlib.sha256()
    h.update(json.dumps(model.config.to_dict(), sort_keys=True, default=str).encode())
    h.update(json.dumps(model.descriptions.to_dict(), sort_keys=True, default=str).encode())
    with torch.no_grad():
        for name, p in model.state_dict().items():
            flat = p.detach().reshape(-1)
            h.update(f"{name}{tuple(p.shape)}{p.dtype}".encode())
            h.update(flat[:: max(1, flat.numel() // 64)].to("cpu", torch.float32).numpy().tobytes())
    return h.hexdigest()[:16]


def check_same_model(output: str | Path, identity: str) -> None:
    """Refuse to add lines to an output (or its part files) that another model wrote."""
    output = Path(output)
    for path in [output, *_part_files(output)]:
        others = {r.get("model") for r in read_records(path)} - {None, "", identity}
        if others:
            raise DataError(f"{path} holds predictions of another model ({', '.join(sorted(others))}; this model is "
                            f"{identity}): resuming would mix two models' lines. Write to a new file, or delete it "
                            "to start over.")


def left_to_do(clips: Sequence[ClipRef], output: str | Path, shard: Shard = Shard()) -> list[ClipRef]:
    """``shard``'s clips of ``clips`` that are not yet in ``output`` (nor in part files of an interrupted
    sharded run)."""
    done = done_clips(Path(output))
    return [c for c in list(clips)[shard.rank :: shard.world] if c.key not in done]


def nothing_left(clips: Sequence[ClipRef], output: str | Path) -> Optional[CorpusSummary]:
    """For one process: when every clip is already in ``output`` (or in part files, which are merged into it
    now), the run's summary, without a model; None when some clip is left to predict."""
    output = Path(output)
    output_kind(output)
    start = time.perf_counter()
    if left_to_do(clips, output):
        return None
    if _part_files(output):
        merge_parts(output, [c.key for c in clips])
    return CorpusSummary(output, len(clips), len(clips), 0, 0, 0, time.perf_counter() - start)


def _as_is(item):
    return item


def _forwards(items: Iterable[Ingested], clips: int) -> Iterable[list[Ingested]]:
    """Ingested clips in groups holding ``clips`` readable ones (unreadable ones go along with a group)."""
    group, readable = [], 0
    for item in items:
        group.append(item)
        readable += item.pixels is not None
        if readable == clips:
            yield group
            group, readable = [], 0
    if group:
        yield group


def predict_corpus(model, clips: Sequence[ClipRef], output: str | Path, *, shard: Shard = Shard(),
                   batch_size: Optional[int] = None, workers: int = 2, dev=None, dtype=None,
                   fallback: str = "center", limits: Optional[Limits] = None, progress: bool = True,
                   accelerate=None, faces: str = "main") -> CorpusSummary:
    """Predict every clip of ``clips`` not yet in ``output`` (see the module docstring).

    ``batch_size``: clips a model forward, their frames in one image-tower call; by default as many clips as
    fill the frames a call that run fastest here with the backend in use (:func:`dferclip.backends.frame_batch`,
    timed now on CPU if it never was on this machine), at least one.
    ``accelerate``: a function called with no argument once the worker processes have started (so they are
    forked before any backend thread pool exists), e.g. to convert the image tower (dferclip.backends).
    With ``shard.world > 1`` torch.distributed must be initialised (:func:`run_sharded` does it).
    ``faces="all"``: every face track of each clip is predicted, one line per (clip, face), a clip's lines
    written together (columns ``face``, ``face_main``, ``face_start_s``, ``face_end_s``).
    """
    import torch

    from . import backends, runtime
    from .predict import mid_level_renders, score_sequences

    output = Path(output)
    output_kind(output)
    start = time.perf_counter()
    dev = torch.device(dev) if dev is not None else next(model.parameters()).device
    dtype = dtype or runtime.compute_dtype(dev)
    mine = list(clips)[shard.rank :: shard.world]
    identity = model_identity(model)
    check_same_model(output, identity)
    todo = left_to_do(clips, output, shard)
    target = output if shard.world == 1 else part_path(output, shard.rank)
    summary = CorpusSummary(output, len(clips), len(mine) - len(todo), 0, 0, 0, 0.0)
    T = model.input_config.num_frames
    with LineWriter(target, model.class_names, faces=faces == "all") as writer, sigchld_kept():
        if todo:
            ahead = batch_size or max(backends.frame_batch_sizes(T)) // T  # clips the workers keep ready
            loader = torch.utils.data.DataLoader(
                IngestDataset(todo, model.input_config, fallback=fallback, limits=limits, faces=faces),
                batch_size=None,
                num_workers=workers, collate_fn=_as_is,
                worker_init_fn=functools.partial(_worker_init, yield_to_model=dev.type == "cpu") if workers else None,
                prefetch_factor=max(2, -(-ahead // workers)) if workers else None, persistent_workers=False,
                multiprocessing_context=fork_free_start() if workers else None,
                timeout=_worker_timeout(limits) if workers else 0)
            items = iter(loader)  # starts the workers now
            if accelerate is not None:
                accelerate()
            summary.backend = backends.in_use(model, dev, dtype)
            frames_a_call = batch_size * T if batch_size else backends.frame_batch(model, dev, dtype, measure=True)
            summary.clips_per_forward = batch_size or max(1, frames_a_call // T)
            bar = progress_counter(len(todo), desc="clips" if shard.world == 1 else f"rank {shard.rank}",
                                   unit="clip", enabled=progress, position=shard.rank)
            for batch in _forwards(items, summary.clips_per_forward):
                ok = [b for b in batch if b.pixels is not None]
                probs, model_s = None, 0.0
                if ok:
                    t0 = time.perf_counter()
                    frames = model_input(model.input_config, torch.cat([b.pixels for b in ok]))
                    sequences = len(frames) // T  # a clip's faces are sequences of their own
                    positions = torch.arange(sequences * T).view(sequences, T)
                    logits, _, _ = score_sequences(model, frames, positions, dev=dev, dtype=dtype,
                                                   renders=mid_level_renders(model, frames), batch=frames_a_call)
                    probs = logits.softmax(-1)
                    model_s = (time.perf_counter() - t0) / sequences
                row = 0
                for item in batch:
                    if item.pixels is None:
                        writer.append(clip_record(item, model.class_names, None, model_s) | {"model": identity})
                    elif item.faces is None:
                        writer.append(clip_record(item, model.class_names, probs[row], model_s) | {"model": identity})
                        row += 1
                    else:
                        writer.append_all([clip_record(item, model.class_names, probs[row + k], model_s) | face
                                           | {"model": identity} for k, face in enumerate(item.faces)])
                        row += len(item.faces)
                    summary.done += 1
                    summary.errors += item.error is not None
                    summary.no_face += item.status == "no_face"
                    bar.update(1)
            bar.close()
    if shard.world == 1 and _part_files(output):  # an interrupted sharded run, finished by one process
        merge_parts(output, [c.key for c in clips])
    if shard.world > 1:
        import torch.distributed as dist

        dist.barrier()
        if shard.rank == 0:
            merge_parts(output, [c.key for c in clips])
        dist.barrier()
    summary.seconds = time.perf_counter() - start
    return summary


def model_input(input_config, pixels: "torch.Tensor") -> "torch.Tensor":
    """uint8 crops (N, S, S, 3) -> model input (N, 3, S, S), as ingest makes it."""
    return input_config.normalize(pixels.permute(0, 3, 1, 2).float().div_(255.0))


def clip_record(item: Ingested, classes: Sequence[str], probs: Optional["torch.Tensor"], model_s: float) -> dict:
    """One output line."""
    record = {"clip": item.key, "top": None, "probabilities": None,
              "face_found": None if item.status is None else item.status != "no_face", "status": item.status,
              "warnings": item.warnings, "timings": {"ingestion": round(item.seconds, 4), "model": None},
              "error": item.error}
    if probs is not None:
        values = [float(v) for v in probs]
        record["probabilities"] = dict(zip(classes, values))
        record["top"] = classes[max(range(len(values)), key=values.__getitem__)]
        record["timings"]["model"] = round(model_s, 4)
    return record


def run_sharded(fn, shard: Shard):
    """``fn()`` inside a gloo process group when ``shard.world > 1`` (torchrun), destroyed afterwards. gloo
    serves only the barriers, so it works for CPU and GPU processes alike."""
    if shard.world <= 1:
        return fn()
    import torch.distributed as dist

    dist.init_process_group("gloo", timeout=timedelta(hours=48))  # ranks wait for the slowest at the end
    try:
        return fn()
    finally:
        dist.destroy_process_group()
