"""The benchmarks: `python -m bench` times each fast path against its plain reference path
(bench.reference, the way the authors' releases compute it) in one run, as ratios. See
`python -m bench --help` and docs/benchmarks.md."""
