"""Video decoding, probing, frame sampling and sliding windows.

Decoding uses PyAV (FFmpeg): any container and codec FFmpeg reads (mp4/mov with H.264 or HEVC, webm
with VP8/VP9, mkv, avi, animated GIF, ...). Frames are addressed by their index in presentation order,
the index the official DFER-CLIP sampler works on, and come back upright (rotation metadata applied)
with their own timestamps (variable frame rate is kept as is).

Cost stays bounded for long clips: only the GOPs (keyframe to keyframe) that hold a wanted frame are
read, each after a seek to its keyframe; inside a GOP, decoding stops after the last wanted frame and
frames that nothing references are skipped unless wanted. The frame table that says where the GOPs are
comes from the container's sample index where it is complete (mp4, mov, avi) and otherwise from one
pass over the packets without decoding (webm/mkv, webcam recordings without frame count or duration).
"""
from __future__ import annotations

import bisect
import logging
import math
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Sequence, Tuple

import av
import numpy as np

from ..errors import (
    CorruptVideoError,
    DecodeTimeoutError,
    ImageNotVideoError,
    NotAVideoError,
    VideoTooLargeError,
    VideoTooShortError,
)

log = logging.getLogger(__name__)

SAMPLERS = ("middle", "window")  # "window:K" gives the window sampler a stride of K


@dataclass(frozen=True)
class Limits:
    """Bounds on what one ingestion may read, so a bad or hostile file fails fast and small.

    Checked before decoding from the file and its headers, then again from the frame table.
    """

    max_file_bytes: int = 4 * 1024**3  # 4 GiB
    max_pixels: int = 8192 * 4320  # 8K UHD; width * height of one frame
    max_duration_s: float = 3 * 3600.0
    max_frames: int = 1_000_000  # frames in the video (bounds the frame table)
    max_kept_frames: int = 1024  # distinct decoded frames one call keeps (clip + windows)
    max_frame_bytes: int = 1024**3  # memory for kept RGB frames; beyond it frames are downscaled
    decode_timeout_s: float = 60.0  # wall time for probing plus decoding


@dataclass
class VideoInfo:
    """What the file is, as probed (JSON-serialisable via :meth:`to_dict`)."""

    path: str
    container: str
    codec: str
    width: int  # upright frame size, rotation applied
    height: int
    rotation: int  # degrees counter-clockwise applied to the stored frames to make them upright
    num_frames: int
    fps: Optional[float]  # average frame rate
    duration_s: Optional[float]
    variable_frame_rate: bool
    frame_count_from: str  # "index" (the container's sample table) or "packets" (a pass over the packets)
    file_bytes: int

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class DecodedFrame:
    """One decoded frame: RGB uint8 (H, W, 3) upright; ``scale`` = image size / full frame size."""

    index: int
    time_s: float
    image: np.ndarray
    scale: float = 1.0


@dataclass(frozen=True)
class WindowSpec:
    """Sliding windows over a clip, for a timeline of expression over time.

    Each window spans ``length_s`` seconds and starts ``stride_s`` after the previous one; its frames
    are sampled with the model's own sampler, as if the window were a clip. At most ``max_windows``:
    when more would fit, the stride grows so they spread over the whole clip.
    """

    length_s: float = 2.0
    stride_s: float = 1.0
    max_windows: int = 60

    def __post_init__(self):
        if self.length_s <= 0 or self.stride_s <= 0 or self.max_windows < 1:
            raise ValueError("WindowSpec: length_s > 0, stride_s > 0 and max_windows >= 1 required")


@dataclass(frozen=True)
class Window:
    start_s: float
    end_s: float
    indices: Tuple[int, ...]  # frame indices fed to the model for this window


def sample_indices(n: int, num_segments: int, rule: str = "middle") -> List[int]:
    """Frame indices the model sees, out of ``n`` frames.

    ``"middle"`` is the official DFER-CLIP test sampler: with more frames than segments, the middle
    frame of each of ``num_segments`` equal segments (``int(tick / 2 + tick * k)``, tick = n / T);
    otherwise every frame, the last one repeated to fill ``num_segments``.

    ``"window:K"`` is EmoCLIP's loader made deterministic: every K-th frame (0, K, 2K, ...), then
    ``num_segments`` consecutive ones of those. The official loader starts the run at a random place and
    wraps round to the first frame; here the run is centred, and a clip with too few frames is read from
    its first frame, wrapped round once, then mirrored at its end (numpy's "reflect" padding, as the
    official loader pads).
    """
    name, _, arg = rule.partition(":")
    if name not in SAMPLERS or (name == "window") != bool(arg) or (arg and not (arg.isdigit() and int(arg) > 0)):
        raise ValueError(f"unknown sampler {rule!r}; known: middle, window:K (K a stride, e.g. window:4)")
    if n < 1 or num_segments < 1:
        raise ValueError("sample_indices: n >= 1 and num_segments >= 1 required")
    if name == "window":
        return _window_indices(n, num_segments, int(arg))
    if n > num_segments:
        tick = n / num_segments
        return [int(tick / 2.0 + tick * k) for k in range(num_segments)]
    return list(range(n)) + [n - 1] * (num_segments - n)


def _window_indices(n: int, length: int, stride: int) -> List[int]:
    kept = np.arange(0, n, stride)
    m = len(kept)
    if m >= length:
        start = (m - length) // 2
        return kept[start : start + length].tolist()
    run = np.concatenate([kept, kept[: length - m]])  # wrapped round once
    if len(run) < length:
        run = np.pad(run, (0, length - len(run)), mode="reflect") if len(run) > 1 else np.repeat(run, length)
    return run.tolist()


def sliding_windows(frame_times: Sequence[float], num_frames: int, spec: WindowSpec, rule: str = "middle") -> List[Window]:
    """Windows over frames with the given timestamps (seconds, ascending), per ``spec``.

    A window spans [start, start + length) seconds from the first frame; the last one ends with the
    clip (its last frame plus one frame duration). A clip shorter than a window is one window.
    """
    n = len(frame_times)
    if n == 0:
        return []
    times = np.asarray(frame_times, dtype=float) - frame_times[0]
    step = float(np.median(np.diff(times))) if n > 1 else 0.0
    duration = times[-1] + step
    length = min(spec.length_s, duration)
    count = 1 if duration <= length else 1 + math.ceil((duration - length) / spec.stride_s - 1e-9)
    stride = spec.stride_s
    if count > spec.max_windows:
        count = spec.max_windows
        stride = (duration - length) / max(count - 1, 1)
    windows = []
    for w in range(count):
        start = min(w * stride, duration - length)
        lo = int(np.searchsorted(times, start - 1e-6))
        hi = max(int(np.searchsorted(times, start + length - 1e-6)), lo + 1)
        indices = tuple(lo + i for i in sample_indices(hi - lo, num_frames, rule))
        windows.append(Window(start_s=round(start, 6), end_s=round(start + length, 6), indices=indices))
    return windows


def _bytes(n: float) -> str:
    for unit in ("bytes", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1024


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.1f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def _upright_turns(frame) -> int:
    """Quarter turns counter-clockwise that make a decoded frame upright (its display matrix)."""
    return int(round(frame.rotation / 90.0)) % 4


# --- file sniffing -------------------------------------------------------------------------------

_IMAGE_MAGIC = (
    (b"\xff\xd8\xff", "JPEG"),
    (b"\x89PNG\r\n\x1a\n", "PNG"),
    (b"BM", "BMP"),
    (b"II*\x00", "TIFF"),
    (b"MM\x00*", "TIFF"),
)
_HEIF_BRANDS = (b"heic", b"heix", b"mif1", b"avif", b"heim", b"heis")
_IMAGE_DEMUXERS = ("image2", "gif", "webp_pipe", "apng")
_VIDEO_MAGIC = (
    (4, b"ftyp"), (4, b"moov"), (4, b"mdat"), (4, b"wide"), (4, b"free"), (4, b"skip"),  # mp4, mov
    (0, b"\x1a\x45\xdf\xa3"),  # Matroska, WebM
    (0, b"FLV"), (0, b"OggS"), (0, b"\x00\x00\x01\xba"), (0, b"\x30\x26\xb2\x75"),  # flv, ogg, mpeg-ps, asf
    (0, b"GIF8"),
)


def _sniff(head: bytes) -> Tuple[Optional[str], bool]:
    """(image kind or None, whether the bytes look like a video container)."""
    for magic, kind in _IMAGE_MAGIC:
        if head.startswith(magic):
            return kind, False
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "WebP", False
    if head[4:8] == b"ftyp" and head[8:12] in _HEIF_BRANDS:
        return "HEIF", False
    if head[:4] == b"RIFF" and head[8:12] == b"AVI ":
        return None, True
    if head[:1] == b"\x47" and head[188:189] == b"\x47":  # MPEG-TS sync bytes
        return None, True
    return None, any(head[at : at + len(magic)] == magic for at, magic in _VIDEO_MAGIC)


# --- frame table ---------------------------------------------------------------------------------


@dataclass
class _FrameTable:
    """Where the frames are: GOPs in decode order and how many displayed frames each holds."""

    num_frames: int
    gop_packet_start: List[int]  # decode position of each GOP's keyframe
    gop_first_frame: List[int]  # presentation index of each GOP's first frame
    gop_seek_ts: List[int]  # timestamp to seek to for each GOP (stream time base)
    gop_match: List[Tuple[str, int]]  # ("dts" | "pts", value) identifying each GOP's keyframe packet
    num_packets: int
    frame_times: List[float]  # seconds from the first frame, per presentation index (approximate
    #                          in index mode when frames are reordered; exact in packet mode)
    source: str
    first_pts: int  # timestamp of the first frame (stream time base)
    sequential: bool = False  # no usable timestamps or seeking: decode from the start


def _checked(path: Path, limits: Limits) -> Tuple[int, bool]:
    """(size in bytes, whether the first bytes look like a video container); raises for a file that cannot be one."""
    if not path.exists():
        raise NotAVideoError(f"no such file: {path}")
    if not path.is_file():
        raise NotAVideoError(f"not a file: {path}")
    size = path.stat().st_size
    if size == 0:
        raise NotAVideoError(f"{path.name} is empty")
    if size > limits.max_file_bytes:
        raise VideoTooLargeError(f"{path.name} is {_bytes(size)}; the limit is {_bytes(limits.max_file_bytes)}")
    with open(path, "rb") as f:
        head = f.read(256)
    image_kind, looks_like_video = _sniff(head)
    if image_kind:
        raise ImageNotVideoError(f"{path.name} is a {image_kind} image, not a video")
    return size, looks_like_video


def check_input(path, limits: Limits = Limits()) -> None:
    """Fail fast, before anything heavy loads, on a path that cannot be a usable video: missing, not a file,
    empty, over the size limit, or an image (the same checks and errors as :class:`VideoReader`)."""
    _checked(Path(path), limits)


class VideoReader:
    """An open video: ``info`` after probing, ``read(indices)`` for frames. Use as a context manager."""

    def __init__(self, path, limits: Limits = Limits(), *, threads: Optional[int] = None):
        self.path = Path(path)
        self.limits = limits
        self.warnings: List[str] = []  # user-facing notes on what was read
        self.decoded_packets = 0  # packets sent to the decoder, for cost accounting
        self._deadline = time.monotonic() + limits.decode_timeout_s
        self._pending = None  # a demuxed packet that starts the next GOP
        self._next_gop: Optional[int] = 0  # GOP the demuxer is positioned at (None: unknown)
        self._rotation: Optional[int] = None  # known once a frame was decoded
        self._info: Optional[VideoInfo] = None
        self._file_bytes = self._check_file()
        self._container = self._open()
        try:
            self._stream = self._video_stream()
            self._configure_decoder(threads)
            self._table = self._frame_table()
        except BaseException:
            self._container.close()
            raise

    def _configure_decoder(self, threads: Optional[int] = None) -> None:
        self._stream.thread_type = "AUTO"
        self._stream.codec_context.thread_count = threads or min(os.cpu_count() or 1, 8)

    @property
    def info(self) -> VideoInfo:
        """The probed video; the rotation is read from the first decoded frame."""
        if self._info is None:
            if self._rotation is None:
                self._rotation = self._read_rotation()
            self._info = self._probe_info()
        return self._info

    # -- opening and probing -----------------------------------------------------------------

    def _check_file(self) -> int:
        size, self._looks_like_video = _checked(self.path, self.limits)
        return size

    def _open(self):
        try:
            return av.open(str(self.path), metadata_errors="ignore", timeout=self.limits.decode_timeout_s)
        except av.error.ExitError:
            raise DecodeTimeoutError(f"{self.path.name}: opening took longer than {self.limits.decode_timeout_s:g} s") from None
        except av.error.EOFError:
            if self._looks_like_video:
                raise VideoTooShortError(f"{self.path.name} contains no video frames") from None
            raise NotAVideoError(f"{self.path.name} is not a video FFmpeg can read") from None
        except av.error.FFmpegError as e:
            if self._looks_like_video:
                raise CorruptVideoError(f"{self.path.name} looks like a video but cannot be read (truncated or damaged): {e.strerror}") from None
            raise NotAVideoError(f"{self.path.name} is not a video FFmpeg can read") from None

    def _video_stream(self):
        streams = [s for s in self._container.streams.video if not s.disposition & av.stream.Disposition.attached_pic]
        if not streams and not self._container.streams and self._looks_like_video:
            raise VideoTooShortError(f"{self.path.name} contains no video frames")
        if not streams:
            raise NotAVideoError(f"{self.path.name} has no video stream")
        stream = streams[0]
        if not stream.width or not stream.height:
            raise CorruptVideoError(f"{self.path.name}: the video stream has no frame size (damaged header)")
        if stream.width * stream.height > self.limits.max_pixels:
            raise VideoTooLargeError(
                f"{self.path.name} is {stream.width}x{stream.height}; the limit is {self.limits.max_pixels / 1e6:g} megapixels per frame"
            )
        declared = self._declared_duration(stream)
        if declared is not None and declared > self.limits.max_duration_s:
            raise VideoTooLargeError(f"{self.path.name} lasts {_duration(declared)}; the limit is {_duration(self.limits.max_duration_s)}")
        if stream.frames > self.limits.max_frames:
            raise VideoTooLargeError(f"{self.path.name} has {stream.frames} frames; the limit is {self.limits.max_frames}")
        return stream

    def _declared_duration(self, stream) -> Optional[float]:
        if stream.duration is not None and stream.time_base:
            return float(stream.duration * stream.time_base)
        if self._container.duration is not None:
            return self._container.duration / av.time_base
        return None

    def _is_image(self) -> bool:
        name = self._container.format.name
        return any(part in _IMAGE_DEMUXERS or part.endswith("_pipe") for part in name.split(","))

    def _frame_table(self) -> _FrameTable:
        stream = self._stream
        fmt = self._container.format.name
        if self._is_image() and fmt != "gif":
            raise ImageNotVideoError(f"{self.path.name} is a still image ({self._stream.codec_context.name}), not a video")
        index = stream.index_entries
        complete_index = ("mp4" in fmt or "avi" in fmt) and stream.frames > 0 and len(index) == stream.frames
        if complete_index:
            table = self._table_from_index(index)
        else:
            table = self._table_from_packets(sequential=fmt == "gif")
        if table.num_frames == 0:
            raise VideoTooShortError(f"{self.path.name} has no video frames")
        if fmt == "gif" and table.num_frames == 1:
            raise ImageNotVideoError(f"{self.path.name} is a still GIF image, not a video")
        if table.num_frames > self.limits.max_frames:
            raise VideoTooLargeError(f"{self.path.name} has {table.num_frames} frames; the limit is {self.limits.max_frames}")
        if table.frame_times and table.frame_times[-1] > self.limits.max_duration_s:
            raise VideoTooLargeError(
                f"{self.path.name} lasts {_duration(table.frame_times[-1])}; the limit is {_duration(self.limits.max_duration_s)}"
            )
        return table

    def _table_from_index(self, index) -> _FrameTable:
        """GOPs from the container's complete sample index (decode order, dts, keyframe flags)."""
        tb = float(self._stream.time_base)
        starts, first_frames, seek_ts, match, dts = [], [], [], [], []
        frames = 0
        for pos, entry in enumerate(index):
            if entry.is_keyframe or pos == 0:
                starts.append(pos)
                first_frames.append(frames)
                seek_ts.append(entry.timestamp)
                match.append(("dts", entry.timestamp))
            if not entry.is_discard:
                frames += 1
                dts.append(entry.timestamp)
        dts.sort()
        times = [(t - dts[0]) * tb for t in dts] if dts else []
        first_pts = self._stream.start_time or 0
        return _FrameTable(frames, starts, first_frames, seek_ts, match, len(index), times, "index", first_pts)

    def _table_from_packets(self, sequential: bool) -> _FrameTable:
        """GOPs from one pass over the packets (no decoding): for containers without a full index."""
        stream = self._stream
        tb = float(stream.time_base)
        starts, keys, pts_all = [], [], []
        gop_sizes = []
        num_packets = 0
        has_pts = True
        try:
            for packet in self._container.demux(stream):
                if packet.size == 0:
                    continue
                self._check_deadline("reading the packets")
                if packet.is_keyframe or num_packets == 0:
                    starts.append(num_packets)
                    keys.append(packet)
                    gop_sizes.append(0)
                if not packet.is_discard:
                    gop_sizes[-1] += 1
                    if packet.pts is None:
                        has_pts = False
                    else:
                        pts_all.append(packet.pts)
                num_packets += 1
                if num_packets > self.limits.max_frames:
                    raise VideoTooLargeError(f"{self.path.name} has more than {self.limits.max_frames} frames")
        except av.error.ExitError:
            raise DecodeTimeoutError(f"{self.path.name}: reading took longer than {self.limits.decode_timeout_s:g} s") from None
        except av.error.FFmpegError as e:
            if num_packets == 0:
                raise CorruptVideoError(f"{self.path.name}: no video data could be read ({e.strerror})") from None
            self._warn(f"the file is damaged or truncated after {num_packets} frames; only those are used")
        first_frames = [0]
        for size in gop_sizes[:-1]:
            first_frames.append(first_frames[-1] + size)
        num_frames = sum(gop_sizes)
        pts_all.sort()
        times = [(p - pts_all[0]) * tb for p in pts_all] if has_pts and pts_all else []
        seek_ts, match = [], []
        for key in keys:
            ts = key.dts if key.dts is not None else key.pts
            seek_ts.append(ts)
            match.append(("pts", key.pts) if key.pts is not None else ("dts", key.dts))
        sequential = sequential or not has_pts or any(ts is None for ts in seek_ts)
        self._seek_to_start()
        first_pts = pts_all[0] if pts_all else 0
        return _FrameTable(num_frames, starts, first_frames, seek_ts, match, num_packets, times, "packets", first_pts, sequential)

    def _probe_info(self) -> VideoInfo:
        stream = self._stream
        table = self._table
        width, height = stream.width, stream.height
        if self._rotation % 180:
            width, height = height, width
        times = table.frame_times
        duration = None
        if len(times) > 1:
            duration = times[-1] + (times[-1] - times[0]) / (len(times) - 1)
        else:
            duration = self._declared_duration(stream)
        fps = None
        if duration and table.num_frames > 1:
            fps = table.num_frames / duration
        elif stream.average_rate:
            fps = float(stream.average_rate)
        vfr = False
        if len(times) > 2:
            steps = np.diff(np.asarray(times))
            vfr = bool(steps.std() > 0.1 * steps.mean()) if steps.mean() > 0 else False
        return VideoInfo(
            path=str(self.path),
            container=self._container.format.name,
            codec=stream.codec_context.name,
            width=width,
            height=height,
            rotation=self._rotation,
            num_frames=table.num_frames,
            fps=round(fps, 4) if fps else None,
            duration_s=round(duration, 4) if duration else None,
            variable_frame_rate=vfr,
            frame_count_from=table.source,
            file_bytes=self._file_bytes,
        )

    def _read_rotation(self) -> int:
        """Rotation from the first decoded frame's display matrix (multiples of 90 degrees)."""
        try:
            for frame in self._decode_packets(self._container.demux(self._stream), limit=64):
                return _upright_turns(frame) * 90
        except av.error.FFmpegError:
            pass
        finally:
            self._seek_to_start()
        raise CorruptVideoError(f"{self.path.name}: no frame could be decoded")

    def _decode_packets(self, packets, limit: int) -> Iterator:
        codec = self._stream.codec_context
        for i, packet in enumerate(packets):
            if i >= limit:
                break
            if packet.size == 0:
                continue
            self._check_deadline("decoding")
            self.decoded_packets += 1
            yield from codec.decode(packet)
        yield from codec.decode(None)

    def _seek_to_start(self) -> None:
        self._stream.codec_context.flush_buffers()
        try:
            self._container.seek(0, backward=True, any_frame=False)
        except av.error.FFmpegError:
            self._container.close()
            self._container = av.open(str(self.path), metadata_errors="ignore")
            self._stream = self._container.streams.video[self._stream.index]
            self._configure_decoder()
        self._stream.codec_context.flush_buffers()
        self._pending = None
        self._next_gop = 0

    def _warn(self, message: str) -> None:
        if message not in self.warnings:
            log.warning("%s: %s", self.path.name, message)
            self.warnings.append(message)

    def _decode_tolerant(self, packet) -> list:
        """Frames from one packet (None: drain); damaged data is noted, not fatal."""
        try:
            return self._stream.codec_context.decode(packet)
        except av.error.InvalidDataError:
            self._warn("the video has damaged data; some frames may show artefacts")
            return []

    def _check_deadline(self, doing: str) -> None:
        if time.monotonic() > self._deadline:
            raise DecodeTimeoutError(f"{self.path.name}: {doing} took longer than {self.limits.decode_timeout_s:g} s")

    # -- reading frames ----------------------------------------------------------------------

    @property
    def num_frames(self) -> int:
        return self._table.num_frames

    @property
    def frame_times(self) -> List[float]:
        """Seconds from the first frame for each frame index (from the container's timestamps)."""
        times = self._table.frame_times
        if len(times) == self._table.num_frames:
            return times
        fps = float(self._stream.average_rate or 25)
        return [i / fps for i in range(self._table.num_frames)]

    def read(self, indices: Sequence[int], max_side: Optional[int] = None) -> List[DecodedFrame]:
        """Decode the frames at ``indices`` (presentation order; repeats allowed), upright RGB.

        Frames are downscaled when keeping them all would exceed ``Limits.max_frame_bytes``, or to
        ``max_side`` pixels on their long side when given.
        """
        found = {f.index: f for f in self.iter_frames(indices, max_side)}
        return [found[int(i)] for i in indices]

    def iter_frames(self, indices: Sequence[int], max_side: Optional[int] = None) -> Iterator[DecodedFrame]:
        """Like :meth:`read`, but yields each distinct frame, in index order, as soon as it is decoded."""
        wanted = sorted(set(int(i) for i in indices))
        if not wanted:
            return
        if wanted[0] < 0 or wanted[-1] >= self._table.num_frames:
            raise IndexError(f"frame indices must lie in 0..{self._table.num_frames - 1}")
        if len(wanted) > self.limits.max_kept_frames:
            raise VideoTooLargeError(f"{len(wanted)} frames requested; the limit is {self.limits.max_kept_frames}")
        self._out_size = self._output_size(len(wanted), max_side)
        frames = self._iter_sequential(wanted) if self._table.sequential else self._iter_by_gop(wanted)
        done = set()
        for frame in frames:
            done.add(frame.index)
            yield frame
        missing = [i for i in wanted if i not in done]
        if missing:
            raise CorruptVideoError(f"{self.path.name}: frames {missing[:5]} could not be decoded (truncated or damaged file)")

    def _output_size(self, count: int, max_side: Optional[int]) -> Tuple[int, int]:
        """Stored (not upright) frame size to convert to, within the memory budget."""
        w, h = self._stream.width, self._stream.height
        scale = 1.0
        if max_side:
            scale = min(1.0, max_side / max(w, h))
        budget_scale = math.sqrt(self.limits.max_frame_bytes / max(count * w * h * 3, 1))
        scale = min(scale, budget_scale)
        if scale < 1.0:
            return max(2, round(w * scale) // 2 * 2), max(2, round(h * scale) // 2 * 2)
        return w, h

    def _to_decoded(self, frame, index: int) -> DecodedFrame:
        width, height = self._out_size
        if (width, height) == (frame.width, frame.height):
            image = frame.to_ndarray(format="rgb24")
        else:
            image = frame.to_ndarray(format="rgb24", width=width, height=height, interpolation="AREA")
        turns = _upright_turns(frame)
        if self._rotation is None:
            self._rotation = turns * 90
        if turns:
            image = np.ascontiguousarray(np.rot90(image, k=turns))
        if frame.pts is not None:
            time_s = float((frame.pts - self._table.first_pts) * self._stream.time_base)
        else:
            time_s = self.frame_times[index]
        return DecodedFrame(index=index, time_s=round(time_s, 6), image=image, scale=width / frame.width)

    def _iter_sequential(self, wanted: List[int]) -> Iterator[DecodedFrame]:
        """Decode from the start, counting frames in output order (no timestamps or no seeking)."""
        self._seek_to_start()
        targets = set(wanted)
        index = 0
        try:
            for frame in self._decode_packets(self._container.demux(self._stream), limit=self._table.num_packets + 1):
                if index in targets:
                    yield self._to_decoded(frame, index)
                index += 1
                if index > wanted[-1]:
                    break
        except av.error.InvalidDataError as e:
            self._warn(f"decoding stopped at frame {index}: {e.strerror}")
        self._seek_to_start()

    def _iter_by_gop(self, wanted: List[int]) -> Iterator[DecodedFrame]:
        table = self._table
        by_gop: Dict[int, List[int]] = {}
        for i in wanted:
            by_gop.setdefault(bisect.bisect_right(table.gop_first_frame, i) - 1, []).append(i)
        for gop, indices in sorted(by_gop.items()):
            found = self._decode_gop(gop, self._gop_packets(gop), indices)
            for index in sorted(found):
                yield found[index]

    def _gop_packets(self, gop: int) -> list:
        """The packets of one GOP in decode order, seeking to its keyframe when not already there."""
        table = self._table
        if self._next_gop != gop:
            self._seek_gop(gop)
        end = table.gop_packet_start[gop + 1] if gop + 1 < len(table.gop_packet_start) else table.num_packets
        count = end - table.gop_packet_start[gop]
        packets = [self._pending] if self._pending is not None else []
        self._pending = None
        try:
            for packet in self._container.demux(self._stream):
                self._check_deadline("reading")
                if packet.size == 0:
                    continue
                if len(packets) == count:
                    self._pending = packet
                    break
                packets.append(packet)
        except av.error.ExitError:
            raise DecodeTimeoutError(f"{self.path.name}: reading took longer than {self.limits.decode_timeout_s:g} s") from None
        except av.error.FFmpegError as e:
            self._warn(f"packets unreadable after keyframe {gop}: {e.strerror}")
        self._next_gop = gop + 1 if self._pending is not None else None
        return packets

    def _seek_gop(self, gop: int) -> None:
        """Position the demuxer on the keyframe packet of ``gop`` (left in ``_pending``)."""
        kind, value = self._table.gop_match[gop]
        self._stream.codec_context.flush_buffers()
        self._pending = None
        for attempt in range(2):
            target = self._table.gop_seek_ts[gop] if attempt == 0 else self._table.gop_seek_ts[0]
            try:
                self._container.seek(target, stream=self._stream, backward=True, any_frame=False)
            except av.error.FFmpegError as e:
                log.debug("seek to %s failed: %s", target, e.strerror)
                self._seek_to_start()
            for packet in self._container.demux(self._stream):
                if packet.size == 0:
                    break
                ts = packet.dts if kind == "dts" else packet.pts
                if ts == value:
                    self._pending = packet
                    return
                if ts is not None and ts > value:
                    break  # landed past the keyframe: retry from the start
        raise CorruptVideoError(f"{self.path.name}: cannot find keyframe {gop} (truncated or damaged file)")

    def _decode_gop(self, gop: int, packets: list, indices: List[int]) -> Dict[int, DecodedFrame]:
        """Decode the wanted frames of one GOP; frames are identified by presentation timestamp."""
        codec = self._stream.codec_context
        first = self._table.gop_first_frame[gop]
        shown = [pos for pos, p in enumerate(packets) if not p.is_discard]  # decode positions
        by_pts = all(packets[pos].pts is not None for pos in shown)
        if by_pts:
            shown.sort(key=lambda pos: packets[pos].pts)  # presentation order
        target_pts: Dict[int, int] = {}  # pts -> frame index
        last_pos = -1
        for i in indices:
            rank = i - first
            if rank < len(shown):
                target_pts[packets[shown[rank]].pts] = i
                last_pos = max(last_pos, shown[rank])
        if not by_pts:
            last_pos = len(packets) - 1
        found: Dict[int, DecodedFrame] = {}
        nearest: Dict[int, Tuple[int, object]] = {}  # frame index -> (pts distance, frame)
        output_rank = 0

        def take(frame):
            nonlocal output_rank
            if by_pts and frame.pts is not None:
                index = target_pts.get(frame.pts)
                if index is not None:
                    found[index] = self._to_decoded(frame, index)
                    return
                for pts, index in target_pts.items():
                    gap = abs(frame.pts - pts)
                    if index not in found and gap < nearest.get(index, (math.inf, None))[0]:
                        nearest[index] = (gap, frame)
            else:
                if first + output_rank in indices:
                    found[first + output_rank] = self._to_decoded(frame, first + output_rank)
                output_rank += 1

        try:
            for packet in packets[: last_pos + 1]:  # the deadline holds within a GOP: one may be the whole clip
                self._check_deadline("decoding")
                codec.skip_frame = "DEFAULT" if (not by_pts or packet.pts in target_pts) else "NONREF"
                self.decoded_packets += 1
                for frame in self._decode_tolerant(packet):
                    take(frame)
            codec.skip_frame = "DEFAULT"
            for frame in self._decode_tolerant(None):
                take(frame)
        finally:
            codec.skip_frame = "DEFAULT"
            codec.flush_buffers()
        for index, (_, frame) in nearest.items():
            if index not in found:
                self._warn(f"frame {index} was not output by the decoder; the nearest frame stands in")
                found[index] = self._to_decoded(frame, index)
        return found

    # -- context manager ---------------------------------------------------------------------

    def close(self) -> None:
        self._container.close()

    def __enter__(self) -> "VideoReader":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def probe(path, limits: Limits = Limits()) -> VideoInfo:
    """Probe a video: container, codec, upright size, rotation, frame count, fps, duration."""
    with VideoReader(path, limits) as reader:
        return reader.info


def read_frames(path, indices: Sequence[int], limits: Limits = Limits()) -> List[DecodedFrame]:
    """Decode the frames at ``indices`` (presentation order) of the video at ``path``."""
    with VideoReader(path, limits) as reader:
        return reader.read(indices)


def sample_clip(path, num_frames: int = 16, rule: str = "middle", limits: Limits = Limits()) -> List[DecodedFrame]:
    """The ``num_frames`` frames the model sees for the whole clip (the official sampler by default)."""
    with VideoReader(path, limits) as reader:
        return reader.read(sample_indices(reader.num_frames, num_frames, rule))
