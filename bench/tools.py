"""What the benchmark's sections share: timing a call, a result row (fast against reference, as a ratio),
and this process's memory.
"""
import resource
import time



def timed(fn):
    t = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t


def row(results, section, what, fast, ref, unit, higher_is_better):
    ratio = None if fast is None or ref is None else (fast / ref if higher_is_better else ref / fast)
    results.append(dict(section=section, what=what, fast=fast, ref=ref, unit=unit, speedup=ratio))
    fmt = lambda v: "-" if v is None else f"{v:,.3f}"
    print(f"  {what:48s} fast {fmt(fast):>12s}  ref {fmt(ref):>12s}  {unit:10s} "
          f"x{'-' if ratio is None else f'{ratio:.1f}'}", flush=True)


def proc_status(field):
    """A memory field of /proc/self/status (VmRSS, VmHWM) in bytes, or None where /proc is absent."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None


def peak_rss():
    """Peak resident memory of this process in bytes: VmHWM (reset by exec, unlike ru_maxrss,
    which Linux carries over from the parent), ru_maxrss where /proc is absent."""
    peak = proc_status("VmHWM")
    return peak if peak is not None else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
