"""Running extract.py and infer.py as many processes under torchrun, on one machine or many.

torchrun starts one process per GPU (per CPU share without one) and tells each its place in the
environment (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT). Without torchrun, `start`
returns the one-process Ranks: no process group, every helper here does what one process would
do, and errors propagate as they always have.

  start         the process group and this process's Ranks (closed at exit)
  Ranks.shard   the items this rank takes: balanced by size, the same on every rank and every restart
  Ranks.together / Ranks.fail   an error on one rank stops every rank, reported once by rank 0
  Ranks.check_shared   every rank writes to and sees the same output folder
  Ranks.broadcast / all_gather / gather_in_order   small Python objects between ranks

Why gloo, even on GPUs: only file lists, error messages and score arrays travel between ranks,
never tensors on a GPU, and gloo works on every machine.

How ranks avoid hanging. Ranks meet only at sync points, all in the same order on every rank. At
each, every rank posts its status (None, or the one-line error that stops it) in torchrun's key-value
store and waits for every other rank's; then all go on, or all stop with exit status 2 after rank 0
has printed the errors, once each. A rank waiting for another reads its heartbeat (a counter a
thread of that process bumps every BEAT_S seconds) and its `left` key (set when it exits, for
whatever reason): a rank that has left, or whose heartbeat stood still for TIMEOUT_S seconds (its
process or node is gone), stops the waiting rank with a one-line error instead of a hang. A rank
that is slow but alive is waited for however long its shard takes. The process group's own
timeout (TIMEOUT_S) bounds each collective, which starts only once every rank has arrived.
"""
import atexit
import contextlib
import heapq
import os
import socket
import sys
import threading
import time
import uuid
from datetime import timedelta

import torch.distributed as dist

from utils import INPUT_ERROR_HOOKS, InputError, one_line, torchrun_env

TIMEOUT_S = 600     # a rank whose heartbeat stands still this long is gone; also each collective's limit
BEAT_S = 5          # heartbeat period
POLL_S = 1          # the longest pause between two looks at the store while waiting (the first ones are quicker)
INPUT_ERRORS = (InputError, OSError, ValueError)     # bad input: reported in one line, no traceback


class RanksFailed(SystemExit):
    """Raised on every rank when a rank stopped at a sync point; rank 0 has printed why."""


class RankLost(InputError):
    """Another rank left the run or went silent while this one waited for it (one-line message)."""


def shard_indices(sizes, world_size):
    """Owner rank of each item: the largest first (ties: the earlier), each to the rank with the
    fewest bytes so far (ties: the lower rank). Deterministic, so a restart gives the same shards."""
    loads = [(0, r) for r in range(world_size)]                 # (bytes so far, rank), a heap
    owner = [0] * len(sizes)
    for i in sorted(range(len(sizes)), key=lambda i: (-sizes[i], i)):
        load, r = heapq.heappop(loads)
        owner[i] = r
        heapq.heappush(loads, (load + sizes[i], r))
    return owner


class Ranks:
    """This process's place in the run: rank (0 .. world_size - 1), the GPU index on its node
    (local_rank), and the key-value store the ranks meet through (None: one process, no torchrun).
    rank 0 alone prints results and writes the run's shared outputs."""

    def __init__(self, rank=0, world_size=1, local_rank=0, store=None, error_prefix="error: ", timeout_s=TIMEOUT_S):
        self.rank, self.world_size, self.local_rank = rank, world_size, local_rank
        self.store, self.error_prefix, self.timeout_s = store, error_prefix, timeout_s
        self.syncs = 0                  # sync points passed; every rank passes the same ones in the same order
        self.closed = False
        self._stop_beats = threading.Event()

    @property
    def distributed(self):
        return self.store is not None

    @property
    def first(self):
        return self.rank == 0

    def shard(self, sizes):
        """Indices (ascending) of the items this rank takes, given every item's size (e.g. bytes)."""
        owner = shard_indices(sizes, self.world_size)
        return [i for i, r in enumerate(owner) if r == self.rank]

    # ---- meeting points ----

    def sync(self, error=None):
        """Wait until every rank reaches this sync point, each bringing None or a one-line error.
        If any brought an error, rank 0 prints each distinct one once (naming the ranks unless all
        share it) and every rank raises RanksFailed(2). Raises RankLost for a rank that left or went
        silent. One process: raises `error` as an InputError, else returns."""
        if not self.distributed:
            if error is not None:
                raise InputError(error)
            return
        self.syncs += 1
        step = self.syncs
        self.store.set(f"sync/{step}/{self.rank}", error or "")
        statuses = self._wait({r: f"sync/{step}/{r}" for r in range(self.world_size)})
        errors = {r: s for r, s in enumerate(statuses) if s}
        if not errors:
            return
        if self.first:
            self._report(errors)
            self.store.set(f"printed/{step}", "1")
        else:       # torchrun stops the other processes once one exits with an error: let rank 0 print first
            with contextlib.suppress(RankLost):
                self._wait({0: f"printed/{step}"}, limit_s=30)
        raise RanksFailed(2)

    @contextlib.contextmanager
    def together(self):
        """A block every rank runs, then meets the others (a sync point). Bad input raised in it
        (InputError, OSError, ValueError) on any rank stops every rank (RanksFailed, printed once);
        any other exception is re-raised, with its traceback, on its own rank after the others were
        told. One process: exceptions pass through untouched."""
        if not self.distributed:
            yield
            return
        try:
            yield
        except RankLost:
            raise
        except Exception as error:
            self.fail(error)
        else:
            self.sync()

    def fail(self, error):
        """This rank cannot go on: meet the others at their next sync point so that they stop too.
        Raises RanksFailed for bad input, or `error` itself for anything else (its traceback is
        wanted). If a rank already left, or `error` is that news (RankLost), it is printed here."""
        if isinstance(error, RankLost):
            print(f"{self.error_prefix}{error}", file=sys.stderr)
            raise RanksFailed(2) from error
        try:
            self.sync(f"{one_line(error)}" if isinstance(error, INPUT_ERRORS) else
                      f"{type(error).__name__}: {one_line(error)} (traceback on its rank)")
        except RankLost:        # nobody is left to report it
            print(f"{self.error_prefix}rank {self.rank}: {one_line(error)}", file=sys.stderr)
            raise RanksFailed(2) from error
        except RanksFailed:
            if not isinstance(error, INPUT_ERRORS):
                raise error
            raise

    def _report(self, errors):
        """Print each distinct error once, naming its ranks unless every rank had it."""
        by_message = {}
        for r, message in errors.items():
            by_message.setdefault(message, []).append(r)
        for message, ranks in by_message.items():
            who = "" if len(ranks) == self.world_size else \
                f"rank{'s' if len(ranks) > 1 else ''} {', '.join(map(str, ranks))}: "
            print(f"{self.error_prefix}{who}{message}", file=sys.stderr, flush=True)

    def _wait(self, keys, limit_s=None):
        """The values of keys {rank: the key that rank posts}, in rank order, once all are there. A
        rank yet to post must keep its heartbeat moving and must not have left; limit_s: at most
        this long in all. Raises RankLost."""
        seen = {}                   # rank -> (its heartbeat count, when this rank saw it change)
        pause, since = 0.01, time.monotonic()
        try:
            # store.check, not store.wait: a wait that times out logs two warning lines each time
            while not self.store.check(list(keys.values())):
                self._check_missing(keys, seen)
                if limit_s is not None and time.monotonic() - since > limit_s:
                    raise RankLost(f"rank {self.rank} waited {limit_s} s for {', '.join(keys.values())}")
                time.sleep(pause)
                pause = min(2 * pause, POLL_S)
            return [self.store.get(keys[r]).decode() for r in sorted(keys)]
        except RankLost:
            raise
        except RuntimeError as e:       # the store's host (torchrun on the first node) is gone
            raise RankLost(f"rank {self.rank} lost torchrun's key-value store ({one_line(e)})") from None

    def _check_missing(self, keys, seen):
        """Raise RankLost for a rank that has not posted its key ({rank: key}) and has left, or whose
        heartbeat has not moved for timeout_s (seen: rank -> (heartbeat, when it last moved), kept
        between calls)."""
        now = time.monotonic()
        for r, key in keys.items():
            if self.store.check([key]):
                continue
            if self.store.check([f"left/{r}"]):
                why = self.store.get(f"left/{r}").decode()
                raise RankLost(f"rank {r} left the run ({why}) before this point; rank {self.rank} stops too")
            beat = self.store.add(f"beat/{r}", 0)
            if seen.get(r, (None,))[0] != beat:
                seen[r] = (beat, now)
            elif now - seen[r][1] > self.timeout_s:
                raise RankLost(f"rank {r} has given no sign of life for {self.timeout_s:.0f} s (its process or "
                               f"node is gone?); rank {self.rank} stops")

    def _beat(self):
        while not self._stop_beats.wait(BEAT_S):
            with contextlib.suppress(RuntimeError):     # the store's host gone: the waits report that
                self.store.add(f"beat/{self.rank}", 1)

    # ---- data between ranks (each after a sync point, so the collective starts with every rank there) ----

    def broadcast(self, value):
        """rank 0's `value` on every rank."""
        if not self.distributed:
            return value
        self.sync()
        box = [value if self.first else None]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def all_gather(self, value):
        """[value of rank 0, value of rank 1, ...] on every rank."""
        if not self.distributed:
            return [value]
        self.sync()
        out = [None] * self.world_size
        dist.all_gather_object(out, value)
        return out

    def gather_in_order(self, indices, items, count):
        """Every rank's items, given with their indices in a list of `count` (each index on exactly
        one rank), as one list in index order on rank 0; None on the other ranks."""
        if not self.distributed:
            return list(items)
        self.sync()
        parts = [None] * self.world_size if self.first else None
        dist.gather_object(list(zip(indices, items)), parts, dst=0)
        if not self.first:
            return None
        ordered = [None] * count
        for part in parts:
            for i, item in part:
                ordered[i] = item
        return ordered

    def from_first(self, compute):
        """compute() on rank 0 alone (listing files, writing shared ones), its result on every rank;
        bad input raised there stops every rank."""
        with self.together():
            value = compute() if self.first else None
        return self.broadcast(value)

    def check_shared(self, folder):
        """Every rank writes a marker file into `folder` and looks for every other rank's: a rank that
        cannot write there, or does not see a marker, is a one-line error naming the folder and the
        ranks (the folder must be on storage every node shares). The markers are removed."""
        if not self.distributed:
            return
        token = self.broadcast(uuid.uuid4().hex[:12])
        hosts = self.all_gather(socket.gethostname())
        marker = lambda r: os.path.join(folder, f".rank-{token}-{r}")
        try:
            with self.together():
                try:
                    with open(marker(self.rank), "w") as f:
                        f.write(f"{hosts[self.rank]} pid {os.getpid()}\n")
                except OSError as e:
                    raise InputError(f"output folder {folder} is not writable from {hosts[self.rank]} "
                                     f"({e.strerror})") from None
            with self.together():
                unseen = [r for r in range(self.world_size) if not _appears(marker(r))]
                if unseen:
                    raise InputError(f"output folder {folder}: rank {self.rank} on {hosts[self.rank]} does not see "
                                     f"the files rank(s) {', '.join(f'{r} on {hosts[r]}' for r in unseen)} wrote "
                                     f"there: every rank needs it on storage all nodes share")
        finally:
            with contextlib.suppress(OSError):
                os.remove(marker(self.rank))

    def close(self, why="exited"):
        """Leave the run: the others, if they wait for this rank, stop instead of waiting."""
        if self.closed or not self.distributed:
            return
        self.closed = True
        self._stop_beats.set()
        with contextlib.suppress(RuntimeError):
            self.store.set(f"left/{self.rank}", why)
        if dist.is_initialized():
            dist.destroy_process_group()


_current = None     # the Ranks that start() made in this process


def fail_current(error):
    """Ranks.fail(error) of the run this process is in, if it started one and has not left it; else nothing."""
    if _current is not None and _current.distributed and not _current.closed:
        _current.fail(error)


INPUT_ERROR_HOOKS.append(fail_current)     # utils.run_cli's one-line InputError reaches the other ranks too


def _appears(path, tries=3):
    """Whether `path` exists, asking again for a few seconds (a network file system may show a new
    file on another node a moment late)."""
    for attempt in range(tries):
        if os.path.exists(path):
            return True
        if attempt < tries - 1:
            time.sleep(1)
    return False


def start(error_prefix="error: ", timeout_s=TIMEOUT_S):
    """This process's Ranks. Under torchrun: joins the process group (gloo), starts the heartbeat,
    sends stdout of ranks other than 0 to /dev/null (results are rank 0's to print; errors, on
    stderr, still show) and leaves the run at exit. Without torchrun: Ranks() of one process."""
    place = torchrun_env()
    if place is None:
        return Ranks(error_prefix=error_prefix)
    rank, world_size, local_rank = place
    timeout = timedelta(seconds=timeout_s)
    store, rank, world_size = next(dist.rendezvous("env://", rank, world_size, timeout=timeout))
    store.set_timeout(timeout)
    dist.init_process_group("gloo", store=dist.PrefixStore("default_pg", store), rank=rank, world_size=world_size,
                            timeout=timeout)
    # a key prefix of this run's own: torchrun's store outlives a failed attempt that it restarts
    box = [uuid.uuid4().hex if rank == 0 else None]
    dist.broadcast_object_list(box, src=0)
    ranks = Ranks(rank, world_size, local_rank, dist.PrefixStore(f"bn-wvad/{box[0]}", store), error_prefix, timeout_s)
    global _current
    _current = ranks
    threading.Thread(target=ranks._beat, daemon=True).start()
    atexit.register(ranks.close, "exited")
    if rank != 0:
        sys.stdout = open(os.devnull, "w")
    return ranks
