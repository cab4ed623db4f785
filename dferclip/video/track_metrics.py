"""How well face tracks follow people: purity, identity switches, fragments, coverage, false tracks.

Pure Python: compares a scan's tracks (one detection or None per examined frame) with ground truth, a
mapping frame index -> {person: face box}. A frame index missing from the ground truth has no faces.
Each examined frame's detections are matched one-to-one to its true faces, greedily by IoU, pairs with
IoU below ``min_iou`` never matching; detections that match no face are ignored except by
``false_tracks``.
"""
from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

from .faces import Box, iou

Truth = Mapping[int, Mapping[str, Box]]


@dataclass(frozen=True)
class IdSwitch:
    """On frame ``index`` (time ``time_s``) ``person`` was matched to track ``to_track``, last to ``from_track``."""

    person: str
    index: int
    time_s: Optional[float]
    from_track: int
    to_track: int


@dataclass
class TrackingQuality:
    """Tracks compared with ground truth (see the module's docstring for the matching).

    ``purity``: per track with a matched detection, the share of its matched detections that belong to its
    majority person. ``overall_purity``: the same over all tracks' matched detections together (NaN when none
    matched). ``switches``: each change of the track matched to a person between consecutive frames where the
    person is matched. ``tracks_per_person``: the track ids each person was matched to (a person never matched
    has an empty list). ``coverage``: matched true faces / true faces on the examined frames (NaN without true
    faces). ``false_tracks``: tracks with detections none of which matched a person. ``majority``: each
    matched track's majority person.
    """

    purity: Dict[int, float]
    overall_purity: float
    switches: List[IdSwitch]
    tracks_per_person: Dict[str, List[int]]
    coverage: float
    false_tracks: List[int]
    majority: Dict[int, str]
    matched: int
    true_faces: int
    detections: int
    per_person_matched: Dict[str, int] = field(default_factory=dict)

    @property
    def id_switches(self) -> int:
        return len(self.switches)

    @property
    def fragments(self) -> Dict[str, int]:
        """How many tracks each person is split into."""
        return {person: len(ids) for person, ids in self.tracks_per_person.items()}

    def summary(self) -> dict:
        return {
            "overall_purity": _rounded(self.overall_purity),
            "track_purity": {k: _rounded(v) for k, v in self.purity.items()},
            "majority": dict(self.majority),
            "id_switches": self.id_switches,
            "switches": [
                f"{s.person}: track {s.from_track} -> {s.to_track} at frame {s.index}"
                + (f" ({s.time_s:.2f} s)" if s.time_s is not None else "")
                for s in self.switches
            ],
            "tracks_per_person": self.fragments,
            "coverage": _rounded(self.coverage),
            "false_tracks": list(self.false_tracks),
            "matched": self.matched,
            "true_faces": self.true_faces,
            "per_person_matched": dict(self.per_person_matched),
            "detections": self.detections,
        }


def _rounded(value: float) -> float:
    return value if math.isnan(value) else round(value, 4)


def match_frame(detections: Sequence[Tuple[int, Box]], faces: Mapping[str, Box],
                min_iou: float = 0.5) -> Dict[int, str]:
    """One frame's detections (track id, box) matched one-to-one to true faces {person: box}, greedily by
    IoU (highest first), only pairs with IoU >= ``min_iou``. Returns {track id: person}."""
    pairs = []
    for track_id, box in detections:
        for person, face in faces.items():
            overlap = iou(box, face)
            if overlap >= min_iou:
                pairs.append((overlap, track_id, person))
    pairs.sort(key=lambda p: -p[0])  # stable: ties keep detection order
    matched: Dict[int, str] = {}
    taken = set()
    for _, track_id, person in pairs:
        if track_id in matched or person in taken:
            continue
        matched[track_id] = person
        taken.add(person)
    return matched


def evaluate_tracks(indices: Sequence[int], tracks: Sequence, truth: Truth, *,
                    times: Optional[Sequence[float]] = None, min_iou: float = 0.5) -> TrackingQuality:
    """Compare ``tracks`` (each with ``detections``: a Detection with ``box`` or None per examined frame, and
    ``id``; tracks without an ``id`` are numbered by position) with ``truth`` on frames ``indices``."""
    ids = [getattr(track, "id", k) for k, track in enumerate(tracks)]
    if len(set(ids)) != len(ids):
        raise ValueError(f"track ids are not unique: {ids}")
    for track_id, track in zip(ids, tracks):
        if len(track.detections) != len(indices):
            raise ValueError(f"track {track_id} has {len(track.detections)} detections for {len(indices)} frames")
    if times is not None and len(times) != len(indices):
        raise ValueError(f"{len(times)} times for {len(indices)} frames")

    people = sorted({person for faces in truth.values() for person in faces})
    per_track: Dict[int, Counter] = {track_id: Counter() for track_id in ids}
    per_person: Dict[str, List[Tuple[int, int]]] = {person: [] for person in people}  # (frame k, track id)
    true_faces = matched_count = detection_count = 0
    for k, index in enumerate(indices):
        faces = truth.get(index, {})
        found = [(track_id, track.detections[k].box) for track_id, track in zip(ids, tracks)
                 if track.detections[k] is not None]
        detection_count += len(found)
        true_faces += len(faces)
        for track_id, person in match_frame(found, faces, min_iou).items():
            per_track[track_id][person] += 1
            per_person[person].append((k, track_id))
            matched_count += 1

    purity, majority = {}, {}
    majority_total = 0
    for track_id, counts in per_track.items():
        if counts:
            person, count = counts.most_common(1)[0]
            purity[track_id] = count / sum(counts.values())
            majority[track_id] = person
            majority_total += count
    switches = []
    for person, hits in per_person.items():
        for (_, before), (k, after) in zip(hits, hits[1:]):
            if after != before:
                switches.append(IdSwitch(person, indices[k], None if times is None else times[k], before, after))
    switches.sort(key=lambda s: (s.index, s.person))
    tracks_per_person = {person: sorted({track_id for _, track_id in hits}) for person, hits in per_person.items()}
    false_tracks = [track_id for track_id, track in zip(ids, tracks)
                    if not per_track[track_id] and any(d is not None for d in track.detections)]
    return TrackingQuality(
        purity=purity,
        overall_purity=majority_total / matched_count if matched_count else math.nan,
        switches=switches,
        tracks_per_person=tracks_per_person,
        coverage=matched_count / true_faces if true_faces else math.nan,
        false_tracks=false_tracks,
        majority=majority,
        matched=matched_count,
        true_faces=true_faces,
        detections=detection_count,
        per_person_matched={person: len(hits) for person, hits in per_person.items()},
    )


def evaluate_scan(scanned, truth: Truth, min_iou: float = 0.5) -> TrackingQuality:
    """:func:`evaluate_tracks` on a scan with ``indices``, ``times`` and ``tracks``."""
    return evaluate_tracks(scanned.indices, scanned.tracks, truth, times=scanned.times, min_iou=min_iou)
