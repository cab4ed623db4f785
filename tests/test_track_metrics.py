"""Tracking metrics (dferclip.video.track_metrics) on hand-made tracks and ground truth."""
import math
from dataclasses import dataclass
from typing import List, Optional

import pytest

from dferclip.video.faces import Detection
from dferclip.video.track_metrics import evaluate_scan, evaluate_tracks, match_frame

LEFT = (0.0, 0.0, 10.0, 10.0)
RIGHT = (20.0, 0.0, 30.0, 10.0)
NOWHERE = (100.0, 100.0, 110.0, 110.0)


@dataclass
class Track:
    id: int
    detections: List[Optional[Detection]]


def track(track_id, boxes):
    return Track(track_id, [None if b is None else Detection(b, 0.99) for b in boxes])


def shifted(box, dx):
    return (box[0] + dx, box[1], box[2] + dx, box[3])


def test_perfect_tracks():
    truth = {i: {"ann": LEFT, "bob": RIGHT} for i in range(4)}
    q = evaluate_tracks([0, 1, 2, 3], [track(7, [LEFT] * 4), track(9, [RIGHT] * 4)], truth)
    assert q.overall_purity == 1.0 and q.purity == {7: 1.0, 9: 1.0}
    assert q.id_switches == 0 and q.fragments == {"ann": 1, "bob": 1}
    assert q.coverage == 1.0 and q.false_tracks == [] and q.majority == {7: "ann", 9: "bob"}


def test_swapped_identities_are_a_switch_and_impure_tracks():
    # the people swap sides after frame 1; the tracks stay on their sides
    truth = {0: {"ann": LEFT, "bob": RIGHT}, 1: {"ann": LEFT, "bob": RIGHT},
             2: {"ann": RIGHT, "bob": LEFT}, 3: {"ann": RIGHT, "bob": LEFT}}
    q = evaluate_tracks([0, 1, 2, 3], [track(1, [LEFT] * 4), track(2, [RIGHT] * 4)], truth, times=[0, 0.1, 0.2, 0.3])
    assert q.id_switches == 2
    assert {(s.person, s.index, s.from_track, s.to_track) for s in q.switches} == {("ann", 2, 1, 2), ("bob", 2, 2, 1)}
    assert q.switches[0].time_s == 0.2
    assert q.purity == {1: 0.5, 2: 0.5} and q.overall_purity == 0.5
    assert q.fragments == {"ann": 2, "bob": 2}
    assert q.coverage == 1.0
    assert "ann: track 1 -> 2 at frame 2 (0.20 s)" in q.summary()["switches"]


def test_a_short_wrong_stretch_lowers_purity_by_its_share():
    truth = {i: {"ann": LEFT, "bob": RIGHT} for i in range(10)}
    on_ann = [LEFT] * 8 + [RIGHT] * 2  # track 1 jumps to bob for the last two frames
    on_bob = [RIGHT] * 8 + [None] * 2
    q = evaluate_tracks(list(range(10)), [track(1, on_ann), track(2, on_bob)], truth)
    assert q.purity == {1: 0.8, 2: 1.0}
    assert q.overall_purity == pytest.approx(16 / 18)
    assert q.id_switches == 1 and q.switches[0].person == "bob" and q.switches[0].index == 8
    assert q.tracks_per_person == {"ann": [1], "bob": [1, 2]}
    assert q.coverage == pytest.approx(18 / 20)


def test_a_person_split_into_two_tracks_is_a_fragment_and_a_switch():
    truth = {i: {"ann": LEFT} for i in range(6)}
    q = evaluate_tracks(list(range(6)), [track(3, [LEFT] * 2 + [None] * 4), track(5, [None] * 4 + [LEFT] * 2)], truth)
    assert q.fragments == {"ann": 2} and q.id_switches == 1
    assert q.overall_purity == 1.0  # each track is pure
    assert q.coverage == pytest.approx(4 / 6)


def test_a_gap_in_matching_is_not_a_switch_when_the_same_track_comes_back():
    truth = {i: {"ann": LEFT} for i in range(5)}
    q = evaluate_tracks(list(range(5)), [track(0, [LEFT, None, None, NOWHERE, LEFT])], truth)
    assert q.id_switches == 0 and q.fragments == {"ann": 1} and q.coverage == pytest.approx(2 / 5)


def test_false_tracks_and_unmatched_detections():
    truth = {0: {"ann": LEFT}, 1: {"ann": LEFT}, 2: {}}
    tracks = [track(0, [LEFT, LEFT, None]), track(1, [NOWHERE, None, NOWHERE]), track(2, [None, None, LEFT]),
              track(3, [None, None, None])]
    q = evaluate_tracks([0, 1, 2], tracks, truth)
    assert q.false_tracks == [1, 2]  # an empty track is not a false one
    assert q.purity == {0: 1.0} and q.detections == 5 and q.matched == 2


def test_only_examined_frames_count_and_missing_truth_means_no_face():
    truth = {0: {"ann": LEFT}, 1: {"ann": LEFT}, 2: {"ann": LEFT}, 3: {"ann": LEFT}}
    q = evaluate_tracks([0, 2, 5], [track(0, [LEFT, None, LEFT])], truth)
    assert q.true_faces == 2 and q.coverage == 0.5
    assert q.false_tracks == []  # the detection on frame 5 matched nothing but the track did


def test_matching_is_one_to_one_greedy_by_iou():
    ann, bob = LEFT, shifted(LEFT, 4)  # two overlapping faces
    near_bob = shifted(LEFT, 3)  # IoU 0.54 with ann, 0.82 with bob
    assert match_frame([(1, near_bob), (2, ann)], {"ann": ann, "bob": bob}) == {1: "bob", 2: "ann"}
    # two detections of one face: the closer one takes it
    assert match_frame([(1, shifted(ann, 2)), (2, ann)], {"ann": ann}) == {2: "ann"}
    assert match_frame([(1, shifted(ann, 6))], {"ann": ann}) == {}  # IoU 0.25
    assert match_frame([(1, shifted(ann, 6))], {"ann": ann}, min_iou=0.2) == {1: "ann"}


def test_nothing_matched_gives_nan_not_a_pass():
    q = evaluate_tracks([0, 1], [track(0, [NOWHERE, NOWHERE])], {0: {"ann": LEFT}, 1: {"ann": LEFT}})
    assert math.isnan(q.overall_purity) and not q.overall_purity >= 0.95
    assert q.coverage == 0.0 and q.false_tracks == [0] and q.fragments == {"ann": 0}


def test_bad_inputs_are_refused():
    with pytest.raises(ValueError, match="detections for"):
        evaluate_tracks([0, 1], [track(0, [LEFT])], {})
    with pytest.raises(ValueError, match="not unique"):
        evaluate_tracks([0], [track(0, [LEFT]), track(0, [RIGHT])], {})


def test_evaluate_scan_reads_a_scan_and_summary_is_plain_data():
    import json

    @dataclass
    class Scan:
        times: list
        indices: list
        tracks: list

    scan = Scan([0.0, 0.4], [0, 10], [track(4, [LEFT, RIGHT])])
    q = evaluate_scan(scan, {0: {"ann": LEFT}, 10: {"ann": LEFT, "bob": RIGHT}})
    summary = json.loads(json.dumps(q.summary()))
    # track 4 holds ann, then bob: impure, yet no person changed tracks
    assert summary["tracks_per_person"] == {"ann": 1, "bob": 1} and summary["id_switches"] == 0
    assert summary["overall_purity"] == 0.5 and summary["coverage"] == 0.6667
    assert summary["track_purity"] == {"4": 0.5}
