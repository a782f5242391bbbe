"""The review page (report.py) in a real headless Chromium: no script errors, the table sorts, a
segment click seeks the video to the segment's start within one frame, a name cannot inject markup,
and a copied folder still plays. What the page's data holds: test_report_data.py.

The browser tests need Chromium, its driver and selenium (apt-get install chromium chromium-driver;
pip install -r requirements-test.txt); without them they skip and say what is missing.
REPORT_TEST_CHROMIUM and REPORT_TEST_CHROMEDRIVER point them at other binaries.
"""
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from conftest import ROOT
from helpers import (REPORT_FPS as FPS, REPORT_NASTY as NASTY, REPORT_NASTY_FILE as NASTY_FILE,
                     REPORT_THRESHOLD as THRESHOLD, demo_videos, page_data, write_log, write_output, write_stream)
from review.page import write_report


# ---------------------------------------------------------------------------------------------
# the page in a real browser

ERROR_COLLECTOR = """
window.__errors = [];
window.addEventListener("error", e => window.__errors.push("error: " + (e.message || (e.target && e.target.src))), true);
window.addEventListener("unhandledrejection", e => window.__errors.push("unhandled rejection: " + e.reason));
const consoleError = console.error;
console.error = (...args) => { window.__errors.push("console.error: " + args.join(" ")); consoleError(...args); };
"""


def browser_problem():
    """Why the browser tests cannot run on this machine (the reason they skip with), or None."""
    try:
        import selenium  # noqa: F401  (only whether it is installed)
    except ImportError:
        return "selenium is not installed (pip install -r requirements-test.txt)"
    for what, variable, default in (("chromium", "REPORT_TEST_CHROMIUM", "/usr/bin/chromium"),
                                    ("chromedriver", "REPORT_TEST_CHROMEDRIVER", "/usr/bin/chromedriver")):
        path = os.environ.get(variable, default)
        if not (os.path.isfile(path) and os.access(path, os.X_OK)):
            return f"{what} not found at {path} (apt-get install chromium chromium-driver, or set {variable})"
    return None


@pytest.fixture(scope="module")
def browser():
    """One headless Chromium for the module, driven through the system's chromedriver. Naming the
    driver's path keeps Selenium Manager from looking for (and downloading) one of its own."""
    problem = browser_problem()
    if problem:
        pytest.skip(problem)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    options = webdriver.ChromeOptions()
    options.binary_location = os.environ.get("REPORT_TEST_CHROMIUM", "/usr/bin/chromium")
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--mute-audio",
                "--window-size=1400,1000", "--autoplay-policy=no-user-gesture-required"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(os.environ.get("REPORT_TEST_CHROMEDRIVER", "/usr/bin/chromedriver")),
                              options=options)
    driver.set_page_load_timeout(60)
    driver.execute_cdp_cmd("Page.addScriptToEvaluateOnNewDocument", {"source": ERROR_COLLECTOR})
    yield driver
    driver.quit()


def open_page(driver, path, fragment=""):
    """Load a page from disk, as a user double-clicking it would, and check that it ran cleanly."""
    driver.get_log("browser")                                               # drop the previous page's log
    driver.get(Path(path).as_uri() + fragment)
    errors = script_errors(driver)
    assert not errors, errors
    return driver


def script_errors(driver):
    """What went wrong in the page so far: uncaught errors, rejections, console.error, SEVERE log lines."""
    errors = driver.execute_script("return window.__errors")
    return errors + [e["message"] for e in driver.get_log("browser") if e["level"] == "SEVERE"]


def wait_for(driver, script, timeout=10):
    """Poll a JS expression until it is truthy; its value."""
    deadline = time.monotonic() + timeout
    while True:
        value = driver.execute_script("return " + script)
        if value or time.monotonic() > deadline:
            assert value, f"timed out waiting for {script}"
            return value
        time.sleep(0.05)


def table_names(driver):
    """The names in the table of videos, top to bottom."""
    return driver.execute_script("return [...document.querySelectorAll('#videos tbody td.name')].map(td => td.textContent)")


def click_header(driver, title):
    """Click a column heading of the table of videos (as a user sorts it)."""
    from selenium.webdriver.common.by import By
    driver.find_element(By.XPATH, f"//table[@id='videos']//th[text()='{title}']").click()


@pytest.fixture(scope="module")
def demo_folder(tmp_path_factory):
    """An output folder with three real videos, the page built in it."""
    out = write_output(tmp_path_factory.mktemp("demo") / "out", demo_videos())
    write_report(str(out))
    return out


def test_table_sorts(browser, demo_folder):
    open_page(browser, demo_folder / "report.html")
    videos = demo_videos()
    peak = sorted(videos, key=lambda v: -max(v["scores"]))
    assert table_names(browser) == [v["name"] for v in peak]                  # the default: highest peak first
    click_header(browser, "video")
    assert table_names(browser) == [NASTY, "vid2_walk", "vid10_fight"]         # A to Z, numbers by value
    click_header(browser, "video")
    assert table_names(browser) == ["vid10_fight", "vid2_walk", NASTY]
    click_header(browser, "above threshold")
    above = sorted(videos, key=lambda v: -sum(x > THRESHOLD for x in v["scores"]))
    assert table_names(browser) == [v["name"] for v in above]
    click_header(browser, "peak score")
    click_header(browser, "peak score")
    assert table_names(browser) == [v["name"] for v in peak[::-1]]
    assert browser.execute_script("return document.querySelector('#videos th[aria-sort=ascending]').textContent") \
        == "peak score"
    assert not script_errors(browser)


def segment_click_seeks(driver, k):
    """Click the opened video's k-th segment row, wait for the seek; the video's currentTime."""
    from selenium.webdriver.common.by import By
    wait_for(driver, "document.querySelector('.viewer video').readyState >= 1")
    row = driver.find_elements(By.CSS_SELECTOR, "table.segments tbody tr")[k]
    row.click()
    wait_for(driver, "!document.querySelector('.viewer video').seeking")
    return driver.execute_script("return document.querySelector('.viewer video').currentTime")


def test_copied_folder_plays_and_segments_seek(browser, demo_folder, tmp_path):
    copy = tmp_path / "elsewhere" / "copy"
    shutil.copytree(demo_folder, copy)
    moved = tmp_path / "moved-away"
    demo_folder.rename(moved)                                   # the original is gone while the copy is open
    try:
        open_page(browser, copy / "report.html")
        from selenium.webdriver.common.by import By
        browser.find_element(By.XPATH, "//td[text()='vid10_fight']").click()
        assert browser.find_element(By.CSS_SELECTOR, ".viewer h2").text.startswith("vid10_fight")
        src = browser.execute_script("return document.querySelector('.viewer video').currentSrc")
        assert src == (copy / "videos" / "vid10_fight.webm").as_uri()
        segments = page_data(copy / "report.html")["videos"][0]["segments"]
        for k in (1, 0):                                                      # later one first: seeking back works too
            now = segment_click_seeks(browser, k)
            assert abs(now - segments[k]["start"]) <= 1 / FPS, (now, segments[k])
            left = browser.execute_script("return parseFloat(document.querySelector('.viewer .playhead').style.left)")
            assert left == pytest.approx(browser.execute_script(f"return state.frame.x({segments[k]['start']})"), abs=1)
            assert browser.execute_script("return document.querySelector('table.segments tr.current') !== null")

        canvas = browser.find_element(By.CSS_SELECTOR, ".viewer canvas")               # a click on the curve seeks there
        from selenium.webdriver.common.action_chains import ActionChains
        ActionChains(browser).move_to_element_with_offset(canvas, 40, 0).click().perform()
        wait_for(browser, "!document.querySelector('.viewer video').seeking")
        now, aimed = browser.execute_script(
            "const c = document.querySelector('.viewer canvas'); return [document.querySelector('.viewer video').currentTime,"
            " state.frame.xAt(c.clientWidth / 2 + 40)]")
        assert abs(now - aimed) <= 1 / FPS + 0.05

        browser.execute_script("const v = document.querySelector('.viewer video'); v.currentTime = 0.5; v.play()")
        wait_for(browser, "document.querySelector('.viewer video').currentTime > 0.7")
        behind = []                                     # the playhead follows playback frame by frame, not only
        for _ in range(9):                              # at the video's 4 Hz timeupdate events (~25 px apart here)
            left, expected = browser.execute_script(
                "return [parseFloat(document.querySelector('.viewer .playhead').style.left),"
                " state.frame.x(document.querySelector('.viewer video').currentTime)]")
            behind.append(abs(left - expected))
            time.sleep(0.07)
        browser.execute_script("document.querySelector('.viewer video').pause()")
        assert np.median(behind) < 6, behind            # the median: a busy machine may skip a frame or two
        assert not script_errors(browser)
    finally:
        moved.rename(demo_folder)


def test_hostile_name_is_shown_as_text(browser, demo_folder):
    from selenium.webdriver.common.by import By
    open_page(browser, demo_folder / "report.html")
    assert browser.execute_script("return window.__pwned === undefined && document.querySelectorAll('img').length === 0")
    cell = [td for td in browser.find_elements(By.CSS_SELECTOR, "#videos td.name") if td.text.startswith("evil")]
    assert browser.execute_script("return arguments[0].textContent", cell[0]) == NASTY
    cell[0].click()
    assert browser.execute_script("return document.querySelector('.viewer h2').firstChild.textContent") == NASTY
    src = browser.execute_script("return document.querySelector('.viewer video').currentSrc")
    assert src == (demo_folder / "videos" / NASTY_FILE).as_uri()
    start = page_data(demo_folder / "report.html")["videos"][2]["segments"][1]["start"]
    assert abs(segment_click_seeks(browser, 1) - start) <= 1 / FPS              # the file's odd name plays
    assert browser.execute_script("return window.__pwned === undefined")
    assert not script_errors(browser)


def test_page_opens_the_video_named_in_its_address(browser, demo_folder):
    viewed = "return document.querySelector('.viewer h2').firstChild.textContent"
    browser.get("about:blank")
    open_page(browser, demo_folder / "report.html", "#video=vid2_walk")
    assert browser.execute_script(viewed) == "vid2_walk"
    browser.execute_script("location.hash = '#video=' + encodeURIComponent(arguments[0])", NASTY)   # a link, or Back
    wait_for(browser, f"document.querySelector('.viewer h2').firstChild.textContent === {json.dumps(NASTY)}")
    browser.execute_script("location.hash = '#video=%E0%A4%A'")                                # a broken address
    assert browser.execute_script(viewed) == NASTY
    assert not script_errors(browser)


def test_pages_without_times_or_threshold_render(browser, tmp_path):
    from selenium.webdriver.common.by import By
    framed = write_output(tmp_path / "framed", demo_videos()[:2], timed=False)
    open_page(browser, write_report(str(framed)))
    assert browser.execute_script("return document.querySelector('.viewer video')") is None   # frames: not synced
    assert "times unknown" in browser.find_element(By.CSS_SELECTOR, ".viewer .note").text
    browser.find_elements(By.CSS_SELECTOR, "table.segments tbody tr")[0].click()
    assert browser.execute_script("return state.playhead.hidden") is False
    bare = write_output(tmp_path / "bare", demo_videos()[:2], files=False)
    for name in ("metrics.json", "videos.csv", "segments.csv"):
        (bare / name).unlink()
    open_page(browser, write_report(str(bare)))
    assert table_names(browser) == ["vid10_fight", "vid2_walk"]
    assert not script_errors(browser)


def test_event_metrics_both_aps_and_hourly_rates_on_the_page(browser, tmp_path):
    metrics = {"threshold": {"value": THRESHOLD, "source": "quantile 0.99 of the training normals' scores",
                             "origin": "calibration", "false_alarm_rate_normal_videos": 2.5,
                             "false_alarms_per_hour": 3.5},
               "AUC": 91.5, "AP": 70.25, "AP_sklearn": 71.0,
               "events": {"events": 4, "detected": 3, "event_recall": 75.0, "event_IoU": 41.5, "alarms_normal": 2}}
    out = write_output(tmp_path / "out", demo_videos()[:2], metrics=metrics)
    open_page(browser, write_report(str(out)))
    text = browser.execute_script("return document.body.textContent")
    for shown in ("events at the threshold", "3 of 4 (recall 75.00 %)", "41.50 %", "AP_sklearn", "71.00",
                  "false alarms per hour of normal video", "normal per hour"):
        assert shown in text, shown
    assert not script_errors(browser)


def test_stream_page_embeds_event_clip(browser, tmp_path):
    from selenium.webdriver.common.by import By
    folder, events = write_stream(tmp_path / "stream")
    open_page(browser, write_report(str(folder)))
    assert browser.execute_script("return document.querySelector('.viewer video')") is None     # a live source
    rows = browser.find_elements(By.CSS_SELECTOR, "table.segments tbody tr")
    assert len(rows) == 2
    rows[0].click()
    wait_for(browser, "document.querySelector('video.clip') && document.querySelector('video.clip').readyState >= 1")
    assert browser.execute_script("return document.querySelector('video.clip').currentSrc").endswith("/clips/event1.webm")
    assert browser.execute_script("return state.playhead.hidden") is False
    rows[1].click()                                                            # no clip: the old one stays
    assert not script_errors(browser)


def test_training_page_renders(browser, tmp_path):
    logs = tmp_path / "logs"
    logs.mkdir()
    write_log(logs / "xd_1.jsonl", [100, 200, 300], best_at=200)
    write_log(logs / "xd_2.jsonl", [100, 200, 300, 400])
    open_page(browser, write_report(str(logs)))
    runs = browser.execute_script("return [...document.querySelectorAll('table.runs tbody tr td:first-child')]"
                                  ".map(td => td.textContent)")
    assert runs == ["xd_2.jsonl", "xd_1.jsonl"]                                # best AP first
    assert browser.execute_script("return document.querySelectorAll('section.run canvas').length") == 2 * 6
    assert browser.execute_script("return [...document.querySelectorAll('section.run canvas')].every(c => c.width > 0)")


def test_full_test_set_page_is_compact_and_complete(browser, tmp_path):
    """800 videos, 150,000 snippets: one row per video, scores embedded compactly (not a DOM node per
    snippet), a video's curve drawn when it is opened. Its speed is measured by `python -m bench --sections h`."""
    rng = np.random.default_rng(0)
    counts = rng.multinomial(150_000 - 800 * 20, np.ones(800) / 800) + 20
    out = tmp_path / "big"
    out.mkdir()
    (out / "metrics.json").write_text(json.dumps({"threshold": {"value": 0.9, "source": "test"}}))
    lines, segments, listing = ["video,snippet,score,exceedance,normal_per_hour,start_frame,end_frame,start_s,end_s"], [], []
    seg_header = "video,rank,start_frame,end_frame,start_s,end_s,peak_s,peak_score,peak_exceedance,peak_normal_per_hour,mean_score"
    for v, n in enumerate(counts):
        scores = rng.random(n)
        lines += [f"v{v:03d},{i},{x:.6g},{1 - x:.4g},{5625 * (1 - x):.4g},{16 * i},{16 * i + 16},{16 * i / 25:.3f},{(16 * i + 16) / 25:.3f}"
                  for i, x in enumerate(scores)]
        segments += [f"v{v:03d},{r + 1},{16 * r},{16 * r + 16},{16 * r / 25:.3f},{(16 * r + 16) / 25:.3f},"
                     f"{16 * r / 25:.3f},0.95,0.01,56.25,0.95" for r in range(3)]
        listing.append(f"v{v:03d},{'abnormal' if v % 2 else 'normal'},{n},,{'32-96 160-320' if v % 2 else ''}")
    (out / "scores.csv").write_text("\n".join(lines) + "\n")
    (out / "segments.csv").write_text(seg_header + "\n" + "\n".join(segments) + "\n")
    (out / "videos.csv").write_text("video,label,snippets,source,gt\n" + "\n".join(listing) + "\n")

    page = write_report(str(out))
    assert os.path.getsize(page) < 5e6                  # about 24 bytes per snippet: arrays, not markup
    open_page(browser, page)
    assert browser.execute_script("return document.querySelectorAll('#videos tbody tr').length") == 800
    assert browser.execute_script("return document.querySelectorAll('*').length") < 20 * 800
    browser.execute_script("document.querySelector('#videos tbody tr:last-child').click()")
    assert browser.execute_script("return [...document.querySelectorAll('canvas')].some(c => c.width > 0)")
    click_header(browser, "above threshold")
    assert not script_errors(browser)


def test_browser_tests_skip_with_a_reason_when_chromium_is_missing(tmp_path):
    env = {**os.environ, "REPORT_TEST_CHROMIUM": str(tmp_path / "no-chromium"), "PYTHONWARNINGS": "ignore"}
    run = subprocess.run([sys.executable, "-m", "pytest", "-rs", "-p", "no:cacheprovider", "-n", "0",
                          f"{__file__}::test_table_sorts"], cwd=ROOT, env=env, capture_output=True, text=True,
                         timeout=300)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "1 skipped" in run.stdout and "SKIPPED" in run.stdout
    if importlib.util.find_spec("selenium") is None:        # a clone without requirements-test.txt
        assert "selenium is not installed (pip install -r requirements-test.txt)" in run.stdout
    else:
        assert f"chromium not found at {tmp_path / 'no-chromium'} (apt-get install chromium chromium-driver" \
            in run.stdout


def test_first_screen_shows_the_videos_and_the_timeline(browser, demo_folder):
    """At 1400x1000 the table of videos, the opened video and its timeline are on the first screen; the
    run's details are folded into one line above them (their metrics and threshold in it)."""
    open_page(browser, demo_folder / "report.html")
    seen = browser.execute_script("""
      const bottom = q => document.querySelector(q).getBoundingClientRect().bottom;
      return {screen: window.innerHeight, table: bottom('#videos tbody tr'), video: bottom('.viewer video'),
              timeline: bottom('.viewer canvas'), legend: bottom('.viewer .legend'),
              folded: !document.getElementById('run-details').open,
              line: document.querySelector('#run-details > summary').textContent,
              hidden: !document.querySelector('#run-details .card').checkVisibility()}""")
    for part in ("table", "video", "timeline", "legend"):
        assert 0 < seen[part] <= seen["screen"], (part, seen)
    assert seen["folded"] and seen["hidden"]
    assert seen["line"].startswith("run details: ") and "threshold 0.5" in seen["line"]


def test_segments_are_a_strip_along_the_top_with_a_legend(browser, demo_folder):
    """A detected segment is drawn at the plot's top edge, not as a band up from the bottom (which reads
    as 'the region below the threshold'); the legend says what the strip is."""
    open_page(browser, demo_folder / "report.html", "#video=vid10_fight")
    colours = browser.execute_script("""
      const f = state.frame, v = DATA.videos[state.index], s = v.segments.find(s => !v.gt.some(([a, b]) => s.start < b && a < s.end));
      const ctx = document.querySelector('.viewer canvas').getContext('2d'), r = window.devicePixelRatio || 1;
      const at = y => Array.from(ctx.getImageData(Math.round(f.x((s.start + s.end) / 2) * r), Math.round(y * r), 1, 1).data);
      return {top: at(f.top + 3), low: at(f.bottom - 3), middle: at((f.top + f.bottom) / 2),
              legend: document.querySelector('.viewer .legend').textContent}""")
    orange = lambda rgba: rgba[0] > 200 and 100 < rgba[1] < 170 and rgba[2] < 80 and rgba[3] > 150
    assert orange(colours["top"]), colours
    assert not orange(colours["low"]) and not orange(colours["middle"]), colours
    assert "detected segment (strip along the top: above the threshold)" in colours["legend"]


def test_small_things_on_the_pages(tmp_path, browser):
    """One video is '1 video'; a key both metrics.json and its settings hold is listed once; a number and
    its unit never wrap apart; a y axis's labels (lr's .000105) fit left of the plot."""
    folder, _ = write_stream(tmp_path / "stream")
    # stream.py's metrics.json holds `live` at the top and in its settings
    (folder / "metrics.json").write_text(json.dumps(dict(video="cam1", live=False, settings=dict(live=False, window=8))))
    data = page_data(write_report(str(folder)))
    assert [k for k, _ in data["summary"]["settings"]].count("live") == 1
    open_page(browser, folder / "report.html")
    assert browser.execute_script("return document.getElementById('subtitle').textContent").startswith(
        "review of anomaly scores: 1 video")
    assert browser.execute_script("return document.querySelector('.list .tools span').textContent") == "1 video"
    assert browser.execute_script("return getComputedStyle(document.querySelector('#videos td.num')).whiteSpace") \
        == "nowrap"
    logs = tmp_path / "logs"
    logs.mkdir()
    with open(logs / "xd_1.jsonl", "w") as f:
        for i, step in enumerate((100, 200, 300)):
            f.write(json.dumps(dict(step=step, lr=0.000105 - 1e-6 * i, AUC=80 + i, AP=60 + i)) + "\n")
    open_page(browser, write_report(str(logs)))
    fits = browser.execute_script("""
      const canvas = [...document.querySelectorAll('section.run canvas')].find(c => c.getAttribute('aria-label') === 'lr');
      const ctx = canvas.getContext('2d'); ctx.font = '11px system-ui, sans-serif';
      const f = plotFrame(document.createElement('canvas'), 200, 100, 300, 0.000103 - 1e-7, 0.000105 + 1e-7);
      return ctx.measureText('0.000105').width + 4 <= f.left""")      # right-aligned 4 px left of the plot
    assert fits
