"""The labelling app as it runs: ``rlhf-envs label`` under uvicorn, many labelers, a crash, a browser."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import pytest

from rlhf_envs.label import LabelSession
from rlhf_envs.preferences import PreferenceStore
from rlhf_envs.preferences.text import TextPreferenceStore


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextlib.contextmanager
def label_server(
    store: Path, *options: str, startup_s: float = 120
) -> Iterator[tuple[subprocess.Popen, str]]:
    """``rlhf-envs label --store STORE --port P OPTIONS`` in a subprocess; yields it and its address."""
    port = free_port()
    command = [sys.executable, "-m", "rlhf_envs.cli", "label", "--store", str(store), "--port", str(port)]
    log = open(store.parent / f"server-{port}.log", "w+")  # noqa: SIM115 (closed below)
    process = subprocess.Popen(
        [*command, *options], stdout=log, stderr=subprocess.STDOUT, env=os.environ | {"OMP_NUM_THREADS": "1"}
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + startup_s
        while True:
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(f"{url}/api/config", timeout=5).status_code == 200:
                    break
            if process.poll() is not None or time.monotonic() > deadline:
                log.seek(0)
                pytest.fail(f"the server did not start (exit code {process.poll()}):\n{log.read()}")
            time.sleep(0.2)
        yield process, url
    finally:
        if process.poll() is None:
            process.terminate()
            process.wait(60)
        log.close()


def stop(process: subprocess.Popen) -> None:
    """A graceful stop (SIGTERM): uvicorn shuts the app down, which makes every answer final.

    Recent uvicorn then re-raises the signal, so the process ends as killed by SIGTERM, as is conventional.
    """
    process.send_signal(signal.SIGTERM)
    assert process.wait(60) in (0, -signal.SIGTERM)


def text_queue(path: Path, pairs: int) -> TextPreferenceStore:
    """A text store with ``pairs`` pairs waiting in its queue (what the server will serve)."""
    store = TextPreferenceStore(path)
    session = LabelSession(store)
    for i in range(pairs):
        session.add_text_pair(f"prompt {i}", f"left {i}", f"right {i}")
    return store


def stored_label_ids(path: Path) -> list[str]:
    return [record["meta"]["label_id"] for record in TextPreferenceStore(path, skip_invalid=True).records]


def test_rlhf_envs_label_serves_on_127_0_0_1_and_stores_labels(tmp_path):
    store = tmp_path / "prefs.jsonl"
    with label_server(store, "--text", "--pairs", "2", "--labeler", "ann") as (process, url):
        with httpx.Client(base_url=url) as client:
            assert client.get("/api/config").json()["default_labeler"] == "ann"
            pair = client.get("/api/next", params={"labeler": "ann"}).json()["pair"]
            bad = client.post(
                "/api/labels", json={"pair_id": pair["pair_id"], "choice": "best", "labeler": "ann"}
            )
            assert bad.status_code == 422 and "choice" in bad.json()["error"]
            assert not store.exists()
            label = {"pair_id": pair["pair_id"], "choice": "left", "labeler": "ann"}
            assert client.post("/api/labels", json=label).status_code == 201
            assert client.get("/api/progress").json()["labelled"] == 1
        stop(process)
    (row,) = TextPreferenceStore(store).records
    assert (row["prompt"], row["chosen"], row["rejected"]) == (pair["prompt"], pair["left"], pair["right"])
    assert row["meta"]["labeler"] == "ann"


def label_many(
    url: str, labeler: str, labels: int, rng: np.random.Generator
) -> tuple[list[str], list[float]]:
    """One labeler asks for a pair and labels it ``labels`` times; returns label ids and post latencies."""
    label_ids, latencies = [], []
    with httpx.Client(base_url=url, timeout=60) as client:
        for _ in range(labels):
            pair = client.get("/api/next", params={"labeler": labeler}).json()["pair"]
            choice = ("left", "right")[rng.integers(2)]
            start = time.perf_counter()
            response = client.post(
                "/api/labels", json={"pair_id": pair["pair_id"], "choice": choice, "labeler": labeler}
            )
            latencies.append(time.perf_counter() - start)
            assert response.status_code == 201, response.text
            label_ids.append(response.json()["label_id"])
    return label_ids, latencies


def test_fifty_labelers_at_once_every_label_stored_exactly_once(tmp_path):
    labelers, labels_each = 50, 20
    store = tmp_path / "prefs.jsonl"
    text_queue(store, labelers * labels_each)
    with label_server(store) as (process, url):
        start = time.perf_counter()
        with ThreadPoolExecutor(labelers) as pool:
            results = list(
                pool.map(
                    lambda i: label_many(url, f"labeler {i}", labels_each, np.random.default_rng(i)),
                    range(labelers),
                )
            )
        elapsed = time.perf_counter() - start
        stop(process)
    sent = [label_id for label_ids, _ in results for label_id in label_ids]
    latencies = np.array([latency for _, times in results for latency in times])
    stored = stored_label_ids(store)
    rows = TextPreferenceStore(store).records
    print(
        f"\nload test: {len(stored)} labels stored / {len(sent)} sent by {labelers} concurrent labelers "
        f"in {elapsed:.1f} s; label post latency p50 {1000 * np.percentile(latencies, 50):.1f} ms, "
        f"p99 {1000 * np.percentile(latencies, 99):.1f} ms"
    )
    assert len(sent) == labelers * labels_each
    assert sorted(stored) == sorted(sent)  # each acknowledged label stored once, nothing else
    # No pair was handed to two labelers: every pair got exactly one label.
    assert len({row["meta"]["pair_id"] for row in rows}) == len(rows)


def test_a_killed_server_loses_no_acknowledged_label(tmp_path):
    store = tmp_path / "prefs.jsonl"
    text_queue(store, 400)
    acknowledged: list[str] = []
    killed = threading.Event()

    def label_until_killed(url: str, labeler: str) -> None:
        with httpx.Client(base_url=url, timeout=30) as client, contextlib.suppress(httpx.TransportError):
            while not killed.is_set():
                pair = client.get("/api/next", params={"labeler": labeler}).json()["pair"]
                label = {"pair_id": pair["pair_id"], "choice": "right", "labeler": labeler}
                response = client.post("/api/labels", json=label)
                if response.status_code == 201:
                    acknowledged.append(response.json()["label_id"])

    with label_server(store, "--undo-seconds", "30") as (process, url):
        threads = [threading.Thread(target=label_until_killed, args=(url, f"labeler {i}")) for i in range(8)]
        for thread in threads:
            thread.start()
        while len(acknowledged) < 100:
            time.sleep(0.01)
        process.kill()  # SIGKILL mid-stream: no shutdown, answers held for undo never reached the store
        process.wait(30)
        killed.set()
        for thread in threads:
            thread.join(60)
    before_restart = stored_label_ids(store)
    assert len(before_restart) < len(acknowledged)  # some acknowledged answers were only in the journal
    # Restarting the app finishes the job: every acknowledged label in the store, once; the rest is served.
    with label_server(store) as (process, url):
        pair = httpx.get(f"{url}/api/next", params={"labeler": "after"}).json()["pair"]
        stop(process)
    stored = stored_label_ids(store)
    assert set(acknowledged) <= set(stored) and len(stored) == len(set(stored))
    answered = {record["meta"]["pair_id"] for record in TextPreferenceStore(store).records}
    assert pair is not None and pair["pair_id"] not in answered


@pytest.fixture(scope="module")
def browser():
    """Headless Debian chromium driven by Selenium through chromedriver."""
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    chromedriver = shutil.which("chromedriver")
    if chromium is None or chromedriver is None:
        pytest.skip(
            "the browser test needs chromium and chromedriver: apt-get install chromium chromium-driver"
        )
    from selenium import webdriver

    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for argument in ("--headless=new", "--no-sandbox", "--window-size=1280,860", "--disable-dev-shm-usage"):
        options.add_argument(argument)
    options.add_argument("--autoplay-policy=no-user-gesture-required")
    driver = webdriver.Chrome(options=options, service=webdriver.ChromeService(executable_path=chromedriver))
    yield driver
    driver.quit()


def half_cheetah_queue(path: Path) -> list[str]:
    """Three pairs of rendered HalfCheetah clips waiting in the queue of a control store."""
    import gymnasium as gym

    from rlhf_envs.preferences import collect_segments

    env = gym.make("rlhf_envs/HalfCheetah-v0", render_mode="rgb_array", width=320, height=240)
    segments = collect_segments(env, None, 80, 20, seed=0, render=True)
    env.close()
    session = LabelSession(PreferenceStore(path))
    fps = env.metadata["render_fps"]
    return [session.add_segment_pair(segments[i], segments[j], fps=fps) for i, j in ((0, 1), (2, 3), (1, 2))]


@pytest.mark.slow  # about 35 s on a 2-core CPU: HalfCheetah's clips rendered in software, chromium
def test_label_in_a_real_browser_with_a_click_and_keys(tmp_path, browser):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import WebDriverWait

    store = tmp_path / "prefs.jsonl"
    pair_ids = half_cheetah_queue(store)
    instructions = "Which cheetah runs forward better?"
    with label_server(store, "--instructions", instructions) as (process, url):
        browser.get(f"{url}/?labeler=browser")
        wait = WebDriverWait(browser, 60)
        progress = browser.find_element(By.ID, "progress")
        wait.until(lambda _: progress.text.startswith("0 / 3 labelled"))
        assert browser.find_element(By.ID, "instructions").text == instructions
        assert browser.find_element(By.ID, "labeler").get_attribute("value") == "browser"
        # Both clips load and play (H.264 in Debian's chromium).
        playing = "return [...document.querySelectorAll('video')].map(v => v.readyState >= 2 && !v.error)"
        wait.until(lambda driver: driver.execute_script(playing) == [True, True])
        time.sleep(1.0)  # a few frames in, for the screenshot
        screenshot = Path(os.environ.get("LABEL_SCREENSHOT", tmp_path / "label_app.png"))
        assert browser.save_screenshot(str(screenshot))

        browser.find_element(By.ID, "choose-left").click()
        wait.until(lambda _: progress.text.startswith("1 / 3 labelled"))
        body = browser.find_element(By.TAG_NAME, "body")
        body.send_keys(Keys.ARROW_RIGHT)
        wait.until(lambda _: progress.text.startswith("2 / 3 labelled"))
        body.send_keys("u")  # undo the right: the second pair comes back
        wait.until(lambda _: progress.text.startswith("1 / 3 labelled"))
        assert "Undone: right" in browser.find_element(By.ID, "message").text
        body.send_keys("t")
        wait.until(lambda _: progress.text.startswith("2 / 3 labelled"))
        stop(process)
    comparisons = list(PreferenceStore(store))
    assert [(c.meta["pair_id"], c.label, c.meta["labeler"]) for c in comparisons] == [
        (pair_ids[0], 1.0, "browser"),
        (pair_ids[1], 0.5, "browser"),
    ]
