"""Run extract.py or infer.py as a user would, but with the stand-in network (test_extract.GridProbe)
in place of I3D: what tests/test_distributed.py starts under torchrun.

    torchrun --standalone --nproc_per_node 2 tests/standin_run.py extract VIDEOS --out DIR --i3d_weights ANY_FILE ...
    torchrun --standalone --nproc_per_node 2 tests/standin_run.py infer --model_path CKPT --video ... 

The weights file is never read (its identity still keys the records). Two test hooks, read here
only, never by the project's code:
  STANDIN_KILL=<video stem>    the process that is about to extract that video kills itself
                               (SIGKILL, as an out-of-memory kill or a lost node would)
  STANDIN_RANK1_CWD=<folder>   rank 1 works in that folder, so a relative --out is another folder
                               than rank 0's: storage the ranks do not share
"""
import os
import signal
import sys
from pathlib import Path

TESTS = Path(__file__).resolve().parent
sys.path[:0] = [str(TESTS.parent), str(TESTS)]

import extract  # noqa: E402
import video.extraction  # noqa: E402
import video.weights  # noqa: E402
import infer  # noqa: E402
from helpers import GridProbe  # noqa: E402
from utils import run_cli  # noqa: E402


def stand_in(path, device="cpu"):
    return GridProbe().to(device)


def main():
    command, argv = sys.argv[1], sys.argv[2:]
    extract.load_i3d = video.weights.load_i3d = stand_in
    kill = os.environ.get("STANDIN_KILL")
    if kill:
        extract_video = video.extraction.extract_video

        def killing(path, *args, **kwargs):
            if Path(path).stem == kill:
                os.kill(os.getpid(), signal.SIGKILL)
            return extract_video(path, *args, **kwargs)
        video.extraction.extract_video = killing
    if os.environ.get("STANDIN_RANK1_CWD") and os.environ.get("RANK") == "1":
        os.chdir(os.environ["STANDIN_RANK1_CWD"])
    if command == "extract":
        sys.exit(extract.main(argv))
    run_cli(lambda: infer.main(argv))


if __name__ == "__main__":
    main()
