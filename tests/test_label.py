"""The labelling app in-process: the session's rules and the JSON API through FastAPI's TestClient."""

from __future__ import annotations

import json
import subprocess
import sys
import threading

import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient

from rlhf_envs.label import LabelConflict, LabelSession, UnknownPair, WebLabeler, create_app
from rlhf_envs.label.command import serve
from rlhf_envs.preferences import PreferenceStore, Segment
from rlhf_envs.preferences.text import TextPreferenceStore

LOCAL = "http://127.0.0.1"


class Clock:
    """A settable clock, so that undo windows and leases pass without waiting."""

    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


def text_session(tmp_path, clock, pairs: int = 3, **options) -> LabelSession:
    session = LabelSession(TextPreferenceStore(tmp_path / "prefs.jsonl"), clock=clock, **options)
    for i in range(pairs):
        session.add_text_pair(f"prompt {i}", f"left {i}", f"right {i}", meta={"index": i})
    return session


def segment(seed: int, steps: int = 6) -> Segment:
    rng = np.random.default_rng(seed)
    return Segment(
        obs=rng.normal(size=(steps, 3)),
        actions=rng.normal(size=(steps, 2)),
        next_obs=rng.normal(size=(steps, 3)),
        rewards=rng.normal(size=steps),
        frames=rng.integers(0, 256, size=(steps, 17, 23, 3), dtype=np.uint8),
    )


def client(session: LabelSession, **options) -> TestClient:
    return TestClient(create_app(session, allowed_hosts=["127.0.0.1"], **options), base_url=LOCAL)


def files(session: LabelSession) -> tuple[bytes, bytes]:
    """The store's and the journal's bytes: what a rejected request must leave unchanged."""
    store = session.store.path.read_bytes() if session.store.path.exists() else b""
    return store, session.journal.path.read_bytes()


def test_a_posted_label_is_stored_with_labeler_and_time_in_trl_columns(tmp_path, clock):
    session = text_session(tmp_path, clock)
    with client(session) as app:
        pair = app.get("/api/next", params={"labeler": "ann"}).json()["pair"]
        assert pair["prompt"] == "prompt 0" and (pair["left"], pair["right"]) == ("left 0", "right 0")
        response = app.post(
            "/api/labels", json={"pair_id": pair["pair_id"], "choice": "right", "labeler": "ann"}
        )
        assert response.status_code == 201
        # Acknowledged means in the journal; the store gets it once it can no longer be undone.
        assert len(TextPreferenceStore(session.store.path)) == 0
        clock.now += session.undo_seconds
        progress = app.get("/api/progress", params={"labeler": "ann"}).json()
    rows = TextPreferenceStore(session.store.path).records
    assert len(rows) == 1
    assert (rows[0]["prompt"], rows[0]["chosen"], rows[0]["rejected"]) == ("prompt 0", "right 0", "left 0")
    meta = rows[0]["meta"]
    assert meta["labeler"] == "ann" and meta["index"] == 0
    assert meta["label_id"] == response.json()["label_id"] and meta["pair_id"] == pair["pair_id"]
    assert meta["time"].startswith("1970-01-12T13:46:40")
    assert progress["labelled"] == 1 and progress["target"] == 3 and progress["pending_pairs"] == 2
    assert progress["labeler"]["labelled"] == 1 and progress["labeler"]["per_minute"] == 1.0


def test_a_double_submit_is_stored_once(tmp_path, clock):
    session = text_session(tmp_path, clock, undo_seconds=0)
    with client(session) as app:
        pair_id = app.get("/api/next", params={"labeler": "ann"}).json()["pair"]["pair_id"]
        label = {"pair_id": pair_id, "choice": "left", "labeler": "ann"}
        first, second = app.post("/api/labels", json=label), app.post("/api/labels", json=label)
        changed = app.post("/api/labels", json=label | {"choice": "right"})
    assert (first.status_code, second.status_code) == (201, 200)
    assert second.json()["duplicate"] and second.json()["label_id"] == first.json()["label_id"]
    assert changed.status_code == 409 and "undo it first" in changed.json()["error"]
    assert len(TextPreferenceStore(session.store.path)) == 1


@pytest.mark.parametrize(
    ("body", "headers", "status", "message"),
    [
        ({"pair_id": "0" * 32, "choice": "left", "labeler": "ann"}, None, 404, "no pair has the id"),
        ({"pair_id": "PAIR", "choice": "up", "labeler": "ann"}, None, 422, "choice"),
        ({"pair_id": "PAIR", "choice": "left", "labeler": "ann", "extra": 1}, None, 422, "extra"),
        ({"pair_id": "PAIR", "choice": "left"}, None, 422, "labeler: Field required"),
        ({"pair_id": 7, "choice": "left", "labeler": "ann"}, None, 422, "pair_id"),
        ({"pair_id": "PAIR", "choice": "left", "labeler": "<script>"}, None, 422, "labeler must be"),
        (b'{"pair_id": ', {"content-type": "application/json"}, 400, "not valid JSON"),
        (b"[1, 2]", {"content-type": "application/json"}, 422, "body"),
        (b'{"choice": "' + b"x" * 5000 + b'"}', {"content-type": "application/json"}, 413, "at most 4096"),
        (
            b'{"pair_id": "PAIR", "choice": "left", "labeler": "ann"}',
            {"content-type": "text/plain"},
            415,
            "json",
        ),
    ],
)
def test_a_bad_label_request_gets_a_4xx_with_a_message_and_writes_nothing(
    tmp_path, clock, body, headers, status, message
):
    session = text_session(tmp_path, clock, undo_seconds=0)
    with client(session) as app:
        pair_id = app.get("/api/next", params={"labeler": "ann"}).json()["pair"]["pair_id"]
        before = files(session)
        if isinstance(body, dict):
            response = app.post(
                "/api/labels", json={k: pair_id if v == "PAIR" else v for k, v in body.items()}
            )
        else:
            response = app.post(
                "/api/labels", content=body.replace(b"PAIR", pair_id.encode()), headers=headers
            )
        assert response.status_code == status
        assert message.lower() in response.json()["error"].lower()
        assert files(session) == before
        # The pair is still waiting: a rejected request answered nothing.
        assert app.get("/api/next", params={"labeler": "ann"}).json()["pair"]["pair_id"] == pair_id


def test_clips_are_served_by_pair_id_and_side_only(tmp_path, clock):
    session = LabelSession(PreferenceStore(tmp_path / "prefs.jsonl"), clock=clock, undo_seconds=0)
    left, right = segment(0), segment(1)
    pair_id = session.add_segment_pair(left, right, fps=5)
    with client(session) as app:
        pair = app.get("/api/next", params={"labeler": "ann"}).json()["pair"]
        clip = app.get(pair["clips"]["left"]["url"])
        assert pair["clips"]["left"]["media_type"] == "video/mp4"
        assert clip.status_code == 200 and clip.headers["content-type"] == "video/mp4"
        assert clip.content[4:8] == b"ftyp"
        assert app.get(f"/api/pairs/{pair_id}/clips/middle").status_code == 422
        assert app.get(f"/api/pairs/{'f' * 32}/clips/left").status_code == 404
        assert app.get("/api/pairs/..%2F..%2Fprefs.jsonl/clips/left").status_code == 404
        assert (
            app.post("/api/labels", json={"pair_id": pair_id, "choice": "tie", "labeler": "ann"}).status_code
            == 201
        )
    (comparison,) = PreferenceStore(session.store.path)
    assert comparison.label == 0.5 and comparison.meta["labeler"] == "ann"
    np.testing.assert_array_equal(comparison.segment_a.obs, left.obs)
    np.testing.assert_array_equal(comparison.segment_b.rewards, right.rewards)
    # The clips show the frames; the store keeps the segments without them.
    assert comparison.segment_a.frames is None


def test_an_mp4_clip_without_ffmpeg_is_written_as_a_gif(tmp_path):
    """imageio-ffmpeg missing (a fresh interpreter where it cannot be imported): a GIF and a warning."""
    script = (
        "import sys, warnings; sys.modules['imageio_ffmpeg'] = None\n"
        "import numpy as np\n"
        "from rlhf_envs.label.clips import write_clip\n"
        "with warnings.catch_warnings(record=True) as caught:\n"
        "    warnings.simplefilter('always')\n"
        f"    path = write_clip(np.zeros((3, 8, 8, 3), np.uint8), {str(tmp_path / 'clip')!r}, fps=10)\n"
        "print(path.name, any('writing a GIF instead' in str(w.message) for w in caught))\n"
    )
    output = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True).stdout
    assert output.split() == ["clip.gif", "True"]
    assert (tmp_path / "clip.gif").read_bytes()[:6] == b"GIF89a" and not list(tmp_path.glob("*.mp4"))


def test_gif_clips_when_asked(tmp_path, clock):
    session = LabelSession(PreferenceStore(tmp_path / "prefs.jsonl"), clock=clock, clip_format="gif")
    pair_id = session.add_segment_pair(segment(0), segment(1))
    path, media_type = session.clip_path(pair_id, "right")
    assert media_type == "image/gif" and path.read_bytes()[:6] == b"GIF89a"


def test_control_labels_are_p_left_preferred(tmp_path, clock):
    session = LabelSession(PreferenceStore(tmp_path / "prefs.jsonl"), clock=clock, undo_seconds=0)
    for seed in range(4):
        session.add_segment_pair(segment(2 * seed), segment(2 * seed + 1))
    for choice in ("left", "right", "tie", "skip"):
        session.answer("ann", session.next_pair("ann").pair_id, choice)
    assert [c.label for c in PreferenceStore(session.store.path)] == [1.0, 0.0, 0.5]
    assert session.progress()["skipped"] == 1 and session.progress()["labelled"] == 3


def test_text_ties_and_skips_stay_in_the_journal(tmp_path, clock):
    session = text_session(tmp_path, clock, pairs=2, undo_seconds=0)
    for choice in ("tie", "skip"):
        session.answer("ann", session.next_pair("ann").pair_id, choice)
    assert len(TextPreferenceStore(session.store.path)) == 0
    choices = [r["choice"] for r in session.journal.records if r["event"] == "answer"]
    assert choices == ["tie", "skip"] and session.pending == []


def test_undo_hands_the_pair_back_and_nothing_undone_is_stored(tmp_path, clock):
    session = text_session(tmp_path, clock)
    with client(session) as app:
        first = app.get("/api/next", params={"labeler": "ann"}).json()["pair"]["pair_id"]
        app.post("/api/labels", json={"pair_id": first, "choice": "left", "labeler": "ann"})
        second = app.get("/api/next", params={"labeler": "ann"}).json()["pair"]["pair_id"]
        app.post("/api/labels", json={"pair_id": second, "choice": "left", "labeler": "ann"})
        third = app.get("/api/next", params={"labeler": "ann"}).json()["pair"]["pair_id"]  # as the page does
        assert app.get("/api/progress", params={"labeler": "ann"}).json()["labeler"]["can_undo"]
        undone = app.post("/api/undo", json={"labeler": "ann"})
        assert undone.status_code == 200 and undone.json()["undone"]["pair_id"] == second
        # Only the last answer can be undone: the first became final when the second was given.
        again = app.post("/api/undo", json={"labeler": "ann"})
        assert again.status_code == 409 and "nothing to undo" in again.json()["error"]
        assert app.post("/api/undo", json={"labeler": 3}).status_code == 422
        assert app.get("/api/next", params={"labeler": "ann"}).json()["pair"]["pair_id"] == second
        # The pair ann was shown after the undone one is free for the others again.
        assert app.get("/api/next", params={"labeler": "bob"}).json()["pair"]["pair_id"] == third
        app.post("/api/labels", json={"pair_id": second, "choice": "right", "labeler": "ann"})
    # Leaving the app (its shutdown) makes the last answer final.
    rows = TextPreferenceStore(session.store.path).records
    assert [(r["meta"]["pair_id"], r["chosen"]) for r in rows] == [(first, "left 0"), (second, "right 1")]


def test_the_undo_window_closes(tmp_path, clock):
    session = text_session(tmp_path, clock, undo_seconds=5)
    session.answer("ann", session.next_pair("ann").pair_id, "left")
    clock.now += 5
    assert session.commit_due() == 1
    with pytest.raises(LabelConflict, match="nothing to undo"):
        session.undo("ann")
    assert len(TextPreferenceStore(session.store.path)) == 1


def test_a_pair_is_not_handed_to_two_labelers_at_once(tmp_path, clock):
    session = text_session(tmp_path, clock, pairs=2, lease_seconds=60)
    ann, bob = session.next_pair("ann"), session.next_pair("bob")
    assert ann.pair_id != bob.pair_id
    assert session.next_pair("ann").pair_id == ann.pair_id  # a reload shows the same pair
    assert session.next_pair("cyd") is None
    with pytest.raises(LabelConflict, match="someone else"):
        session.answer("cyd", ann.pair_id, "left")
    clock.now += 60  # ann's lease ran out: her pair goes to the next one who asks
    assert session.next_pair("cyd").pair_id == ann.pair_id
    session.answer("cyd", ann.pair_id, "left")
    with pytest.raises(LabelConflict, match="already has its 1 answer"):
        session.answer("ann", ann.pair_id, "left")
    with pytest.raises(UnknownPair):
        session.answer("ann", "f" * 32, "left")


def test_k_labels_per_pair_and_agreement(tmp_path, clock):
    session = text_session(tmp_path, clock, pairs=2, labels_per_pair=3, undo_seconds=0)
    answers = {"ann": ("left", "left"), "bob": ("left", "right"), "cyd": ("left", "skip")}
    for name, choices in answers.items():
        for choice in choices:
            session.answer(name, session.next_pair(name).pair_id, choice)
    assert session.next_pair("dan") is None and session.pending == []
    agreement = session.progress()["agreement"]
    # Pair 0: 3 of 3 labeler pairs agree; pair 1 (ann left, bob right, cyd skipped): 0 of 1.
    assert agreement == {"pairs": 2, "comparisons": 4, "rate": 0.75}
    assert len(TextPreferenceStore(session.store.path)) == 5
    assert text_session(tmp_path / "single", clock).progress()["agreement"] is None


def test_pending_pairs_and_acknowledged_answers_survive_a_restart(tmp_path, clock):
    session = text_session(tmp_path, clock, pairs=3)
    answered = session.answer("ann", session.next_pair("ann").pair_id, "right")[0]
    session.next_pair("bob")  # leased, unanswered: back in the queue after the restart
    # A restart (the answer was held for undo, nothing in the store yet) ...
    reopened = LabelSession(TextPreferenceStore(session.store.path), session.queue_dir, clock=clock)
    assert len(reopened.pending) == 2 and answered.pair_id not in reopened.pending
    rows = reopened.store.records
    assert len(rows) == 1 and rows[0]["meta"]["label_id"] == answered.label_id
    # ... and another one stores nothing twice.
    again = LabelSession(TextPreferenceStore(session.store.path), session.queue_dir, clock=clock)
    assert len(again.store) == 1 and again.pending == reopened.pending


def test_a_torn_journal_line_is_cut_off_on_reopening(tmp_path, clock):
    session = text_session(tmp_path, clock, pairs=2, undo_seconds=0)
    session.answer("ann", session.next_pair("ann").pair_id, "left")
    with open(session.journal.path, "ab") as journal:
        journal.write(b'{"event": "answer", "label_id": "abc')  # a write cut by a crash: never acknowledged
    with pytest.warns(UserWarning, match="torn"):
        reopened = LabelSession(TextPreferenceStore(session.store.path), session.queue_dir, clock=clock)
    assert len(reopened.pending) == 1 and len(reopened.store) == 1


def test_a_session_takes_only_its_kind_of_pairs(tmp_path, clock):
    session = text_session(tmp_path, clock, pairs=1)
    with pytest.raises(TypeError, match="text"):
        session.add_segment_pair(segment(0), segment(1))
    with pytest.raises(ValueError, match="holds text pairs"):
        LabelSession(PreferenceStore(tmp_path / "control.jsonl"), session.queue_dir)
    with pytest.raises(ValueError, match="labeler must be"):
        session.next_pair("")
    with pytest.raises(ValueError, match="labels_per_pair"):
        LabelSession(session.store, tmp_path / "other", labels_per_pair=0)


def test_with_a_token_every_request_needs_it(tmp_path, clock):
    session = LabelSession(PreferenceStore(tmp_path / "prefs.jsonl"), clock=clock)
    pair_id = session.add_segment_pair(segment(0), segment(1))
    clip = f"/api/pairs/{pair_id}/clips/left"
    with TestClient(create_app(session, token="s3cret"), base_url="http://192.0.2.1:8000") as app:
        for path in ("/", "/static/app.js", "/api/config", clip, "/api/next?labeler=ann"):
            response = app.get(path)
            assert response.status_code == 401 and "token" in response.json()["error"]
        assert app.get("/api/config", headers={"Authorization": "Bearer wrong"}).status_code == 401
        assert app.get("/api/config", headers={"Authorization": "Bearer s3cret"}).status_code == 200
        label = {"pair_id": pair_id, "choice": "left", "labeler": "ann"}
        assert app.post("/api/labels", json=label).status_code == 401
        # The page's address carries the token; the cookie it sets lets the <video> elements load clips.
        assert app.get("/?token=s3cret").status_code == 200
        assert app.get(clip).status_code == 200
    assert len(session.journal) == 1  # only the pair: the unauthorised label was not written


def test_serving_on_another_address_generates_and_prints_a_token(tmp_path, clock, monkeypatch):
    session = text_session(tmp_path, clock, pairs=1)
    served = {}
    monkeypatch.setattr("uvicorn.run", lambda app, **options: served.update(app=app, **options))
    printed: list[str] = []
    serve(session, host="0.0.0.0", port=8123, print_fn=printed.append)
    assert served["host"] == "0.0.0.0" and served["port"] == 8123
    token = printed[0].split("?token=")[1]
    assert len(token) >= 32
    with TestClient(served["app"]) as app:
        assert app.get("/api/config").status_code == 401
        assert app.get("/api/config", params={"token": token}).json()["kind"] == "text"
    # On 127.0.0.1 there is no token, and only the loopback names may reach it.
    serve(session, port=8123, print_fn=printed.append)
    assert "token" not in printed[2]
    with TestClient(served["app"], base_url="http://127.0.0.1:8123") as app:
        assert app.get("/api/config").status_code == 200
        assert app.get("/api/config", headers={"host": "rebound.example"}).status_code == 400


def test_the_page_and_its_config(tmp_path, clock):
    session = text_session(tmp_path, clock, pairs=1)
    options = {"instructions": "Prefer the kinder text.", "default_labeler": "ann", "title": "Kindness"}
    with client(session, **options) as app:
        page = app.get("/")
        assert page.status_code == 200 and "<title>Kindness</title>" in page.text
        assert "default-src 'self'" in page.headers["content-security-policy"]
        config = app.get("/api/config").json()
        assert config["instructions"] == "Prefer the kinder text." and config["default_labeler"] == "ann"
        assert app.get("/static/app.js").status_code == 200
        assert app.get("/api/next", params={"labeler": "x" * 65}).status_code == 422
    assert json.loads(session.journal.path.read_text().splitlines()[0])["kind"] == "text"


def answer_all(session: LabelSession, labeler: str, choice: str) -> None:
    """A person who answers every waiting pair with ``choice``."""
    while (pair := session.next_pair(labeler)) is not None:
        session.answer(labeler, pair.pair_id, choice)


def test_web_labeler_sync_waits_for_every_label_handed_over(tmp_path, clock):
    session = LabelSession(PreferenceStore(tmp_path / "prefs.jsonl"), undo_seconds=0)
    labeler = WebLabeler(session, "sync", serve=False, timeout=60)
    pairs = [(segment(2 * i), segment(2 * i + 1)) for i in range(3)]
    labeler.submit(pairs, meta={"round": 0})
    person = threading.Thread(target=answer_all, args=(session, "ann", "right"))
    person.start()
    comparisons = labeler.collect()
    person.join()
    assert [c.label for c in comparisons] == [0.0, 0.0, 0.0]
    assert all(c.meta["round"] == 0 and c.meta["labeler"] == "ann" for c in comparisons)
    np.testing.assert_array_equal(comparisons[2].segment_b.obs, pairs[2][1].obs)
    assert labeler.collect() == []  # each label is collected once


def test_web_labeler_async_takes_the_labels_so_far(tmp_path, clock):
    session = text_session(tmp_path, clock, pairs=0, undo_seconds=0)
    labeler = WebLabeler(session, "async", serve=False)
    ids = labeler.submit_texts(["p0", "p1"], ["a0", "a1"], ["b0", "b1"])
    assert labeler.collect() == []
    session.answer("ann", session.next_pair("ann").pair_id, "right")
    (row,) = labeler.collect()
    assert (row["prompt"], row["chosen"], row["meta"]["pair_id"]) == ("p0", "b0", ids[0])
    assert session.pending == [ids[1]]
    with pytest.raises(ValueError, match="2 prompts, 1 and 2"):
        labeler.submit_texts(["p", "q"], ["a"], ["b", "c"])


def test_web_labeler_sync_gives_up_after_its_timeout(tmp_path, clock):
    labeler = WebLabeler(text_session(tmp_path, clock, pairs=1), "sync", serve=False, timeout=0.2)
    with pytest.raises(TimeoutError, match="1 pairs still wait for labels"):
        labeler.collect()


def test_web_labeler_serves_the_page_and_pairs_survive_a_restart(tmp_path):
    store_path = tmp_path / "prefs.jsonl"
    printed: list[str] = []
    with WebLabeler(
        LabelSession(TextPreferenceStore(store_path)), "async", port=0, print_fn=printed.append
    ) as first:
        first.submit_texts(["p0", "p1"], ["a0", "a1"], ["b0", "b1"])
        assert first.url.startswith("http://127.0.0.1:") and printed == [f"Label at {first.url}"]
        with httpx.Client(base_url=first.url) as http:
            pair = http.get("/api/next", params={"labeler": "ann"}).json()["pair"]
            label = {"pair_id": pair["pair_id"], "choice": "left", "labeler": "ann"}
            assert http.post("/api/labels", json=label).status_code == 201
    # The app's shutdown made the answer final; the unlabelled pair waits in the queue for the next run.
    assert len(TextPreferenceStore(store_path)) == 1
    session = LabelSession(TextPreferenceStore(store_path), undo_seconds=0)
    second = WebLabeler(session, "sync", serve=False, timeout=60)
    assert [session.pair(pair_id).prompt for pair_id in session.pending] == ["p1"]
    answer_all(session, "bob", "left")
    # The first collect also returns the labels an earlier run stored.
    assert [row["prompt"] for row in second.collect()] == ["p0", "p1"]
    with pytest.raises(ValueError, match="mode"):
        WebLabeler(session, "later", serve=False)
