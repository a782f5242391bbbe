"""Which files a folder holds: the one folder scanner of every command (extract.py's and infer.py
--video's video folders, infer.py --video_root, --features and the training features' folders,
report.py's folder of training logs, the ranks of torchrun), and the video suffixes it takes.

A scan follows symbolic links to folders and files, visits each real folder once (a link that loops
back, or reaches a folder already scanned, is left out and named), and sorts what it takes by its path
below the folder, '/'-separated, so every process and every run sees the same list in the same order.
Everything it left out is returned with the reason: a broken link, a loop, a folder it cannot read,
something that is not a file; files of other kinds (by their suffix) and hidden entries (a name
starting with '.') separately, since whether those are worth a line depends on the folder.

Standard library only: training code imports this without PyAV.
"""
import os
import stat
import sys
from dataclasses import dataclass, field
from pathlib import Path

# Every container ffmpeg demuxes video from, by its usual suffixes (`ffmpeg -h muxer=NAME` and
# `ffmpeg -h demuxer=NAME` list them; tests/test_files.py checks this set against libavformat's own lists),
# compared case-insensitively: camcorders write .MTS and .MOD, phones .MP4 and .3gp. Audio-only
# suffixes (.m4a, .wma, .ogg, .mp3) are not taken.
VIDEO_SUFFIXES = frozenset({
    '.mp4', '.m4v', '.mov', '.qt', '.3gp', '.3gpp', '.3g2', '.mj2', '.f4v', '.psp', '.ism', '.ismv', '.lrv',  # ISO / QuickTime
    '.mkv', '.mk3d', '.webm',                                   # Matroska
    '.avi', '.divx', '.xvid',                                   # AVI
    '.ts', '.m2t', '.m2ts', '.mts', '.tp', '.trp', '.tsv',      # MPEG transport stream (AVCHD, broadcast)
    '.mpg', '.mpeg', '.mpe', '.m1v', '.m2v', '.m2p', '.ps', '.vob', '.vro', '.mod', '.tod',  # MPEG program stream
    '.mxf', '.gxf',                                             # broadcast
    '.asf', '.wmv', '.wtv', '.dvr-ms',                          # Windows Media
    '.flv', '.ogv', '.ogm', '.dv', '.dif', '.nut', '.y4m', '.rm', '.rmvb', '.amv', '.ivf', '.obu', '.dav',
    '.h264', '.264', '.h26l', '.avc', '.h265', '.265', '.hevc', '.vc1',   # raw streams (no timestamps)
    '.mjpeg', '.mjpg',
})


@dataclass
class Scan:
    """What scan_folder found under `root`."""
    root: Path
    files: list = field(default_factory=list)      # [Path] taken, sorted by their path below root
    left_out: list = field(default_factory=list)   # [(Path, why)]: links, loops, unreadable folders, non-files
    others: list = field(default_factory=list)     # [(Path, why)]: files of another kind, hidden entries


def suffix_of(path):
    """The suffix by which a scan judges a file, lower case ('CLIP.MTS' -> '.mts'; '.dvr-ms' whole)."""
    name = os.path.basename(path).lower()
    return '.dvr-ms' if name.endswith('.dvr-ms') else os.path.splitext(name)[1]


def scan_folder(root, suffixes, kind='video', recursive=True):
    """The files under `root` whose suffix (suffix_of, any case) is in `suffixes` -> Scan.

    kind names what is taken, for the reasons ('video': "its suffix .txt is not a video's").
    Links to folders and files are followed; a folder is entered once, by its real path (a link
    back to a folder being scanned is a loop; to one scanned already, a repeat), and both are left
    out with the reason. With recursive False only root's own entries are looked at.
    Raises NotADirectoryError when root is not a folder, PermissionError when it cannot be read.
    """
    root = Path(root)
    found = Scan(root)
    os.scandir(root).close()                 # the root itself: its own error, raised
    seen = {}                                # real path -> the path it was first scanned as

    def visit(folder, ancestors):
        real = os.path.realpath(folder)
        if real in seen:
            loop = real in ancestors
            found.left_out.append((folder, f'a link back to {seen[real]}, a folder this scan is inside (a loop)'
                                   if loop else f'the same folder as {seen[real]}, scanned already'))
            return
        seen[real] = folder
        try:
            with os.scandir(folder) as entries:
                entries = sorted(entries, key=lambda e: e.name)
        except OSError as e:
            found.left_out.append((folder, f'a folder that cannot be read ({e.strerror})'))
            return
        for entry in entries:
            path = folder / entry.name
            if entry.name.startswith('.'):
                found.others.append((path, 'hidden (its name starts with ".")'))
                continue
            try:
                st = os.stat(entry.path)              # through any link
            except OSError as e:
                why = f'a broken link (to {os.readlink(entry.path)}: {e.strerror})' if entry.is_symlink() \
                    else f'cannot be read ({e.strerror})'
                found.left_out.append((path, why))
                continue
            if stat.S_ISDIR(st.st_mode):
                if recursive:
                    visit(path, ancestors | {real})
                continue
            if not stat.S_ISREG(st.st_mode):
                found.left_out.append((path, 'not a regular file (a device, pipe or socket)'))
            elif suffix_of(entry.name) in suffixes:
                found.files.append(path)
            else:
                found.others.append((path, f'its suffix {suffix_of(entry.name) or "(none)"} is not a {kind}\'s'))

    visit(root, frozenset())
    below = lambda path: path.relative_to(root).as_posix()
    found.files.sort(key=below)
    return found


_named = set()      # (path, why) already said in this process: a folder scanned twice is named once


def name_left_out(pairs, file=None):
    """Print 'warning: left out PATH: WHY' on stderr for each (path, why) not said before in this
    process. Returns how many were printed."""
    new = [(p, why) for p, why in pairs if (str(p), why) not in _named]
    for path, why in new:
        _named.add((str(path), why))
        print(f'warning: left out {path}: {why}', file=file or sys.stderr)
    return len(new)
