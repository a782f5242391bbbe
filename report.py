"""The review page (the review package) for what infer.py, stream.py or main.py already wrote: ONE
self-contained HTML file (inline CSS and JS, no network access, no server).

  python report.py outputs/               infer.py's or stream.py's output folder -> outputs/report.html
  python report.py logs/                  every training log (*.jsonl) in the folder -> logs/report.html
  python report.py logs/demo_2022.jsonl   one training log -> logs/demo_2022.html, beside its .png
"""
import argparse

from review.page import write_report
from utils import run_cli


def main(argv=None):
    parser = argparse.ArgumentParser(description="Write the review page (one self-contained HTML file) for an "
                                                 "output folder of infer.py or stream.py, or for training logs.")
    parser.add_argument("path", help="an output folder (-> PATH/report.html), a folder of training logs "
                                     "(-> PATH/report.html), or one training log file (-> its name with .html)")
    print(write_report(parser.parse_args(argv).path))


if __name__ == "__main__":
    run_cli(main)
