"""<out>/manifest.csv: every feature file of a run's videos with its bytes and SHA-256, built from the
records, and the check of a folder against it after a copy or a download (verify_manifest).
"""
import contextlib
import csv
import os
import sys
from collections import Counter
from datetime import datetime, timezone
from pathlib import Path

from core.features import record_path
from utils import escape_name, json_text, named_file, one_line, write_file, write_text
from video.records import file_sha256, output_paths, read_extraction_record


MANIFEST = 'manifest.csv'
SETTING_COLUMNS = ('version', 'crops', 'resize', 'fps', 'pad_last', 'fp16', 'backend', 'precision', 'weights',
                   'weights_bytes', 'weights_sha256')
MANIFEST_COLUMNS = ('video', 'crop', 'file', 'bytes', 'sha256', 'snippets', 'frames', 'frame_rate', 'source',
                    'source_bytes', 'source_modified') + SETTING_COLUMNS


def utc_time(mtime_ns):
    """A modification time in nanoseconds since the epoch as ISO 8601 UTC to the second; None stays None."""
    if mtime_ns is None:
        return None
    return datetime.fromtimestamp(mtime_ns / 1e9, timezone.utc).strftime('%Y-%m-%dT%H:%M:%SZ')


def setting_cells(settings):
    """A record's settings (extraction_settings) as the manifest's SETTING_COLUMNS, as text."""
    resize, fps = settings.get('resize'), settings.get('fps')
    weights = settings.get('weights')
    weights = weights if isinstance(weights, dict) else {'path': weights}     # any JSON value naming the network
    cells = dict(version=settings.get('version'), crops=settings.get('crops'),
                 resize='x'.join(map(str, resize)) if isinstance(resize, list) else resize,
                 fps=None if fps is None else f'{fps:g}', pad_last=str(bool(settings.get('pad_last'))).lower(),
                 fp16=str(bool(settings.get('fp16'))).lower(), backend=settings.get('backend'),
                 precision=settings.get('precision'), weights=weights.get('path'),
                 weights_bytes=weights.get('size'), weights_sha256=weights.get('sha256'))
    return {k: '' if v is None else str(v) for k, v in cells.items()}


def recorded_hashes(record, out_dir):
    """{file: (bytes, SHA-256)} of a record's feature files, as recorded when they were written. A
    record written before hashes were recorded gets them now, from its files, and is rewritten
    with them, so that this happens once."""
    if not isinstance(record.get('file_sha256'), dict) or not isinstance(record.get('file_bytes'), dict):
        record['file_bytes'] = {name: os.path.getsize(named_file(out_dir, name)) for name in record['files']}
        record['file_sha256'] = {name: file_sha256(named_file(out_dir, name)) for name in record['files']}
        write_text(named_file(out_dir, f"{record['video']}.json"), json_text(record) + '\n')
    return {name: (record['file_bytes'][name], record['file_sha256'][name]) for name in record['files']}


def remove_leftovers(out_dir, names):
    """Remove the temporary files (utils.atomic_write's .tmp-<random><name>) that a killed process
    left in out_dir while writing one of `names`."""
    for entry in os.scandir(out_dir):
        if entry.name.startswith('.tmp-') and any(entry.name[i:] in names for i in range(5, len(entry.name))):
            with contextlib.suppress(FileNotFoundError):
                os.remove(entry.path)


def write_manifest(out_dir, videos):
    """Write <out_dir>/manifest.csv atomically: a row (MANIFEST_COLUMNS) per feature file of each of
    `videos` (the run's videos whose features are current, in list order), crop order, from their
    records. Returns [(video, one-line problem)]: a video whose record or files cannot be read here
    (written on storage this node does not share?) is left out of the manifest. Temporary files of
    interrupted writes of these files (a killed run) are removed: nothing writes them any more."""
    rows, problems = [], []
    remove_leftovers(out_dir, {name for video in videos for name in
                               [MANIFEST, Path(record_path(out_dir, Path(video).stem)).name]
                               + [p.name for p in output_paths(video, out_dir, 10)]})
    for video in videos:
        record = read_extraction_record(video, out_dir)
        if record is None:
            problems.append((video, f'{video}: left out of the manifest: its record '
                                    f'{record_path(out_dir, Path(video).stem)} cannot be read'))
            continue
        try:
            hashes = recorded_hashes(record, out_dir)
        except OSError as e:
            problems.append((video, f'{video}: left out of the manifest: {one_line(e)}'))
            continue
        source, settings = record.get('source') or {}, setting_cells(record.get('settings') or {})
        rate = record.get('frame_rate')
        for k, name in enumerate(record['files']):
            rows.append(dict(video=record['video'], crop=k, file=name, bytes=hashes[name][0], sha256=hashes[name][1],
                             snippets=record.get('snippets'), frames=record.get('frames'),
                             frame_rate='' if rate is None else f'{rate:.6g}', source=source.get('path'),
                             source_bytes=source.get('size'), source_modified=utc_time(source.get('mtime_ns')),
                             **settings))

    def write(f):
        writer = csv.DictWriter(f, MANIFEST_COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    write_file(Path(out_dir) / MANIFEST, write, text=True)
    return problems


def read_manifest(path):
    """The rows of a manifest.csv as dicts, checked: every column there, crop/bytes/crops integers,
    sha256 64 hex digits, each file listed once. Raises ValueError (one line naming the file)."""
    if not Path(path).is_file():
        raise FileNotFoundError(f'manifest {path} not found')
    try:
        with open(path, newline='', encoding='utf-8') as f:
            reader = csv.DictReader(f)
            missing = [c for c in MANIFEST_COLUMNS if c not in (reader.fieldnames or [])]
            if missing:
                raise ValueError(f'{path}: not a feature manifest (no column {missing[0]})')
            rows = list(reader)
    except (UnicodeDecodeError, csv.Error) as e:
        raise ValueError(f'{path}: not a readable CSV file ({one_line(e)})') from None
    seen = set()
    for line, row in enumerate(rows, 2):
        if not all((row[c] or '').isdigit() for c in ('crop', 'bytes', 'crops')) or \
                len(row['sha256'] or '') != 64 or not all(c in '0123456789abcdef' for c in row['sha256']):
            raise ValueError(f'{path} line {line}: crop, bytes and crops must be whole numbers and sha256 '
                             f'64 hex digits')
        if row['file'] in seen:
            raise ValueError(f'{path} line {line}: {row["file"]} is listed twice')
        seen.add(row['file'])
    return rows


def manifest_problems(path, rows):
    """One line per thing wrong with the folder of a manifest (see verify_manifest)."""
    folder = Path(path).parent
    problems, by_video = [], {}
    for row in rows:
        by_video.setdefault(row['video'], []).append(row)
        file = Path(named_file(folder, row['file']))
        if not file.is_file():
            problems.append(f'{file}: missing')
            continue
        size, expected = file.stat().st_size, int(row['bytes'])
        if size != expected:
            problems.append(f'{file}: {size} bytes, the manifest says {expected} '
                            f'({"truncated" if size < expected else "altered"})')
        elif file_sha256(file) != row['sha256']:
            problems.append(f'{file}: altered (its SHA-256 is not the one in the manifest)')
    for video, own in by_video.items():
        crops = sorted(int(row['crop']) for row in own)
        if crops != list(range(int(own[0]['crops']))):
            problems.append(f'{path}: video {video} has crops {crops} listed, but was extracted with {own[0]["crops"]}')
        record = read_extraction_record(Path(named_file(folder, f'{video}.json')).stem, folder)
        if record is None:
            problems.append(f'{record_path(folder, video)}: missing (the record of video {video}: its snippet times, '
                            f'source and settings)')
        elif record.get('file_sha256') != {row['file']: row['sha256'] for row in own} or \
                setting_cells(record.get('settings') or {}) != {c: own[0][c] for c in SETTING_COLUMNS}:
            problems.append(f'{record_path(folder, video)}: its files, hashes or settings are not the manifest\'s '
                            f'(extracted again after the manifest was written?)')
    settings = {video: tuple(own[0][c] for c in SETTING_COLUMNS) for video, own in by_video.items()}
    if len(set(settings.values())) > 1:
        usual = Counter(settings.values()).most_common(1)[0][0]
        for video, values in settings.items():
            if values != usual:
                changed = ', '.join(f'{c} {v or "none"} (most videos: {u or "none"})'
                                    for c, v, u in zip(SETTING_COLUMNS, values, usual) if v != u)
                problems.append(f'{path}: video {video} was extracted with other settings than most: {changed}')
    listed = {escape_name(row['file']) for row in rows}
    for here, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith('.'))       # a training-item .cache/ is not features
        for name in sorted(files):
            file = Path(here) / name
            if name.startswith('.tmp-'):
                problems.append(f'{file}: a temporary file of an interrupted write or copy')
            elif name.endswith('.npy') and not name.startswith('.') and \
                    escape_name(file.relative_to(folder).as_posix()) not in listed:
                problems.append(f'{file}: a feature file the manifest does not list')
    return problems


def verify_manifest(path):
    """Check a feature folder against its manifest.csv, e.g. after copying or downloading it: every
    file the manifest lists is there with its size and SHA-256; every video's crops are all listed
    and its record (<video>.json: snippet times, source, settings) is there with the same hashes;
    all videos share one set of settings; no feature file the manifest does not list, nor a
    temporary file of an interrupted write, lies in the folder. Prints one line per problem, then a
    summary; returns 0 (all well), 1 (problems) or 2 (the manifest cannot be read)."""
    try:
        rows = read_manifest(path)
    except (OSError, ValueError) as e:
        print(f'extract.py: error: {one_line(e)}', file=sys.stderr)
        return 2
    problems = manifest_problems(path, rows)
    videos = len({row['video'] for row in rows})
    for problem in problems:
        print(problem)
    if problems:
        print(f'{path}: {len(problems)} problem(s) with {len(rows)} feature files of {videos} videos')
        return 1
    print(f'{path}: OK, {len(rows)} feature files of {videos} videos match their sizes and SHA-256, '
          f'one set of settings')
    return 0
