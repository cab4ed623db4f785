"""Face tracks with identities (#22) on multi-person clips made from real faces (tests/media.py's scenarios).

Each scenario is scanned with the real MTCNN detector and scored with dferclip.video.track_metrics: every
person must be one track, never change tracks, tracks must be pure, no track may follow no one, and no track
may have a detection on a frame without faces (the title card).
"""
from types import SimpleNamespace

import pytest

from dferclip.video.track_metrics import evaluate_scan, match_frame
from media import SCENARIOS, scenario_clip

MIN_PURITY = 0.95
MIN_COVERAGE = 0.8  # so the other checks cannot pass by tracking almost nothing
KNOWN_WEAK = {  # scenarios the tracker is known to fail, with why; strict: a fix shows as XPASS, failing the run
    "regraded_cut": "re-identification after a cut to a differently graded shot: the appearance descriptor's "
                    "hue-saturation histogram moves with the colours (same person ~0.6 apart, as far as two people)",
}
SCENARIO_PARAMS = [pytest.param(name, marks=pytest.mark.xfail(reason=KNOWN_WEAK[name], strict=True))
                   if name in KNOWN_WEAK else name for name in SCENARIOS]


@pytest.fixture(scope="session")
def scenario_clips(tmp_path_factory, feat_dir):
    """name -> (path, ground truth), each clip written once per session."""
    folder = tmp_path_factory.mktemp("scenarios")
    made = {}

    def get(name):
        if name not in made:
            path = folder / f"{name}.mp4"
            made[name] = path, scenario_clip(name, path)
        return made[name]

    return get


def scan_clip(path, detector, num_frames: int = 16):
    """The clip's face tracks as ingest_faces finds them for a ``num_frames``-frame model (the regular scan plus the
    model's middle frames, linked by track_faces)."""
    from dferclip.video import tracking
    from dferclip.video.decode import VideoReader, sample_indices
    from dferclip.video.faces import Detection, TrackingConfig
    from dferclip.video.ingest import scan_indices

    config = TrackingConfig()
    with VideoReader(path) as reader:
        wanted = sorted(set(scan_indices(reader.frame_times, config)) | set(sample_indices(reader.num_frames, num_frames, "middle")))
        decoded = list(reader.iter_frames(wanted))
        size = reader.info.width, reader.info.height
    found = []
    for frame, dets in zip(decoded, detector.detect([f.image for f in decoded])):
        looks = [tracking.appearance(frame.image, d.box) for d in dets]
        boxes = [Detection(tuple(v / frame.scale for v in d.box), d.score) for d in dets]
        found.append(tracking.FrameFaces(frame.time_s, boxes, looks, tracking.frame_signature(frame.image)))
    tracks, main = tracking.track_faces(found, size, config)
    return SimpleNamespace(times=[f.time_s for f in decoded], indices=[f.index for f in decoded], tracks=tracks, main=main)


@pytest.fixture(scope="module")
def detector():
    from dferclip.video.faces import MTCNNDetector

    return MTCNNDetector()


@pytest.fixture(scope="module")
def scans(scenario_clips, detector):
    """name -> (scan, ground truth, quality), each scenario scanned once per module."""
    done = {}

    def get(name):
        if name not in done:
            path, truth = scenario_clips(name)
            scanned = scan_clip(path, detector)
            done[name] = scanned, truth, evaluate_scan(scanned, truth)
        return done[name]

    return get


def timeline(scanned, truth) -> str:
    """Per track: its id and, for each run of examined frames, who it matched ('-' nobody; misses left out)."""
    lines = []
    for track in scanned.tracks:
        runs = []
        for k, (index, time_s) in enumerate(zip(scanned.indices, scanned.times)):
            d = track.detections[k]
            if d is None:
                who = "."
            else:
                found = [(t.id, t.detections[k].box) for t in scanned.tracks if t.detections[k] is not None]
                who = match_frame(found, truth.get(index, {})).get(track.id, "-")
            if runs and runs[-1][0] == who:
                runs[-1][2] = time_s
            else:
                runs.append([who, time_s, time_s])
        lines.append(f"track {track.id}: " + ", ".join(f"{w} {a:.2f}-{b:.2f}s" for w, a, b in runs if w != "."))
    return "\n".join(lines)


@pytest.mark.parametrize("name", SCENARIO_PARAMS)
def test_each_person_is_one_pure_track(name, scans):
    scanned, truth, quality = scans(name)
    summary = quality.summary()
    print(name, summary)
    print(timeline(scanned, truth))
    where = f"{name}: {summary}\n{timeline(scanned, truth)}"
    people = sorted({person for faces in truth.values() for person in faces})
    assert quality.fragments == {person: 1 for person in people}, where
    assert quality.id_switches == 0, where
    assert quality.overall_purity >= MIN_PURITY, where
    assert quality.false_tracks == [], where
    assert quality.coverage >= MIN_COVERAGE, where
    ids = [track.id for track in scanned.tracks]
    assert len(set(ids)) == len(ids) and scanned.main in ids, where
    assert list(scanned.times) == sorted(scanned.times) and len(scanned.times) == len(scanned.indices)


@pytest.mark.parametrize("name", SCENARIOS)
def test_no_detection_where_there_is_no_face(name, scans):
    scanned, truth, _ = scans(name)
    empty = [k for k, index in enumerate(scanned.indices) if not truth.get(index)]
    if name == "title_card":
        assert len(empty) >= 3, "the scan examined too few frames of the title card"
    on_empty = [(track.id, scanned.times[k]) for track in scanned.tracks for k in empty if track.detections[k] is not None]
    assert on_empty == [], f"{name}: detections (track, time) on face-free frames: {on_empty}"


def test_swap_ids_follow_the_people_not_the_places(scans):
    scanned, truth, quality = scans("swap")
    swap_index = min(i for i, faces in truth.items() if faces["su"][0] > faces["hao"][0])  # su now on the right
    before, after = {}, {}
    for k, index in enumerate(scanned.indices):
        found = [(t.id, t.detections[k].box) for t in scanned.tracks if t.detections[k] is not None]
        for track_id, person in match_frame(found, truth[index]).items():
            (before if index < swap_index else after).setdefault(person, set()).add(track_id)
    where = f"before the swap {before}, after {after}\n{timeline(scanned, truth)}"
    assert set(before) == set(after) == {"su", "hao"}, where
    assert before == after and before["su"] != before["hao"], where
    assert all(len(ids) == 1 for ids in before.values()), where


@pytest.mark.parametrize("name", SCENARIO_PARAMS)
def test_ingest_faces_reads_each_person_once(name, scenario_clips, detector):
    """The product path: ingest_faces with a timeline examines nearly every frame (the windows' frames) and gives
    one result per person, whose detected boxes are all on that person and whose model frames all show them."""
    from dferclip.config import InputConfig
    from dferclip.video.decode import WindowSpec
    from dferclip.video.ingest import ingest_faces

    path, truth = scenario_clips(name)
    (results,) = ingest_faces(path, [InputConfig()], detector=detector,
                              windows=[WindowSpec(length_s=1.0, stride_s=0.5, max_windows=16)])
    found = {}
    for r in results:
        metas = {m.index: m for m in r.windows.frames + r.frames}
        on = {}
        for m in sorted(metas.values(), key=lambda m: m.index):
            if m.confidence is not None:
                person = match_frame([(0, tuple(m.box))], truth[m.index]).get(0)
                on.setdefault(person, []).append(round(m.time_s, 2))
        found[r.track_id] = on
    where = f"{name}: per result's track, person -> detections: " + str(
        {track: {person: f"{len(ts)} at {ts[0]}-{ts[-1]} s" for person, ts in on.items()} for track, on in found.items()})
    print(where)
    people = sorted({person for faces in truth.values() for person in faces})
    assert len(results) == len(people), where
    assert all(len(on) == 1 and None not in on for on in found.values()), where
    assert sorted(next(iter(on)) for on in found.values()) == people, where
    for r, on in zip(results, found.values()):
        person = next(iter(on))
        assert all(person in truth[m.index] for m in r.frames), f"{where}; track {r.track_id}'s model frames"
