"""Run one attempt of a run as a child process: the built-in trainer or a command template.

    run = CommandRun(run_dir, attempt=2)      # reads RUN_DIR/run.json, renders the command
    run.start()                               # own session/process group; log -> RUN_DIR/attempt-2.log
    ...  run.interrupt(signal.SIGUSR1)        # time limit / preemption: forwarded to the group
    outcome = run.wait()                      # Outcome(state, reason, result, exit_code)

The runner installs no signal handlers by itself (a submitit callable calls `interrupt()`);
`forward_signals(run)` does it for a plain process. Progress of external commands
($ISOFLOP_METRICS lines or the template's progress_regex) is copied into RUN_DIR/metrics.jsonl
while `wait()` polls. After each attempt RUN_DIR/attempt-<n>.outcome.json records
{attempt, state, reason, exit_code, wall_s, command, ...}.
"""
from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Iterator, Optional, Sequence

from ..atomic import write_json_atomic
from ..schemas import read_run_json
from .command import (
    LOG_PREFIX, CommandTemplate, Outcome, ProgressPump, collect_result, job_environment,
    load_template, paths_for, render_command, render_cwd,
)
from .files import move_aside
from .locks import lock_run_folder, run_folder_holder

__all__ = ["Outcome", "CommandRun", "run_to_end", "forward_signals", "read_run_json"]

POLL_S = 0.2  # how often wait() checks the process
PUMP_S = 1.0  # how often progress is copied into metrics.jsonl
DRAIN_S = 30.0  # after the leader exits, how long to wait for the rest of its process group


def _shell() -> list[str]:
    return ["/bin/bash", "-c"] if os.path.exists("/bin/bash") else ["/bin/sh", "-c"]


# The shell survives a forwarded stop signal (a trap defers it until the foreground command
# exits) so the command's own exit code comes back; the command itself gets default handlers.
_TRAPS = "trap : TERM USR1 USR2 HUP INT\n"


def _die_with_parent():
    """A preexec_fn for the command's shell: SIGKILL it when the thread that started it dies, so
    a job killed with -9 leaves no shell behind (Linux; None elsewhere). prctl is looked up here,
    in the parent: a forked child of a threaded process must not load libraries."""
    if not sys.platform.startswith("linux") or threading.current_thread() is not threading.main_thread():
        return None
    import ctypes

    prctl = ctypes.CDLL(None, use_errno=True).prctl
    return lambda: prctl(1, int(signal.SIGKILL))  # 1: PR_SET_PDEATHSIG


def _group_alive(pgid: int) -> bool:
    """Whether any non-zombie process is left in the process group."""
    proc = Path("/proc")
    if proc.is_dir():
        for d in proc.iterdir():
            if not d.name.isdigit():
                continue
            try:
                stat = (d / "stat").read_text()
            except OSError:
                continue
            # pid (comm) state ppid pgrp ...; comm may contain spaces and parentheses
            fields = stat[stat.rfind(")") + 2:].split()
            if len(fields) > 2 and int(fields[2]) == pgid and fields[0] not in ("Z", "X"):
                return True
        return False
    try:
        os.killpg(pgid, 0)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        return True


def _set_aside(paths, attempt: int) -> Optional[str]:
    """Move a non-resumable command's partial files under RUN_DIR/attempt-<k>/ (k = the attempt
    that left them); return that folder's name, or None when there was nothing to move."""
    run_dir, ckpt = paths.run_dir, paths.checkpoint_dir
    victims = [p for p in (ckpt, paths.metrics, paths.normalized_result) if p != run_dir]
    if ckpt in victims and ckpt.is_dir() and not any(ckpt.iterdir()):
        victims.remove(ckpt)
    if paths.log.exists():  # the same attempt started again (a requeued job): its own files
        k = attempt
    else:
        earlier = [int(n) for p in run_dir.glob("attempt-*.log")
                   if (n := p.name[len("attempt-"):-len(".log")]).isdigit() and int(n) < attempt]
        k = max(earlier) if earlier else max(attempt - 1, 0)
    dest = move_aside(run_dir, victims, k)
    return dest.name if dest else None


class CommandRun:
    """One attempt of one run, as a child process in its own session (process group)."""

    def __init__(self, run_dir: Path, *, attempt: int, srun: bool = False,
                 template: Optional[CommandTemplate] = None):
        """Reads run.json, loads the template, renders the command. A problem there (no run.json,
        an unknown or broken template, a template error) does not raise: it is kept in `error`,
        start() logs it, and wait() returns a `failed` Outcome with it as the reason (exit code 2),
        so a job records it like any other failure. Use `check()` to raise it instead."""
        self.run_dir = Path(os.path.abspath(run_dir))
        self.attempt = int(attempt)
        self.srun = srun
        self.log_path = self.run_dir / f"attempt-{self.attempt}.log"
        self.definition: dict = {}
        self.template: Optional[CommandTemplate] = template
        self.command = ""
        self.cwd: Optional[str] = None
        self.error: Optional[str] = None
        self.moved_aside: Optional[str] = None
        self.interrupted: Optional[int] = None
        self.resumed = False  # whether the command was started from an earlier attempt's checkpoint
        self._proc: Optional[subprocess.Popen] = None
        self._t0 = 0.0
        self._outcome: Optional[Outcome] = None
        self._pump: Optional[ProgressPump] = None
        self._lock = threading.RLock()
        self._folder_lock = None  # the run folder's trainer lock, shared with the command
        self._started = False
        try:
            self.definition = read_run_json(self.run_dir)
            if self.template is None:
                self.template = load_template(self.definition.get("trainer") or "builtin")
            self.paths = paths_for(self.run_dir, self.attempt, self.template)
            self.command = render_command(self.definition, self.run_dir, attempt=self.attempt, srun=srun,
                                          template=self.template)
            self.cwd = render_cwd(self.definition, self.run_dir, attempt=self.attempt, template=self.template)
        except ValueError as e:
            self.error = str(e)

    def check(self) -> "CommandRun":
        """Raise ValueError if the run cannot be started (see __init__)."""
        if self.error:
            raise ValueError(self.error)
        return self

    # ------------------------------------------------------------------ lifecycle

    @property
    def pid(self) -> Optional[int]:
        return self._proc.pid if self._proc else None

    def _log(self, msg: str) -> None:
        with open(self.log_path, "a") as f:
            f.write(f"{LOG_PREFIX}{time.strftime('%Y-%m-%dT%H:%M:%S')} {msg}\n")

    def start(self) -> None:
        if self._started:
            raise RuntimeError(f"attempt {self.attempt} of {self.run_dir.name} was already started")
        self._started, self._t0 = True, time.time()
        if self.error is None and self.cwd and not os.path.isdir(self.cwd):
            self.error = f"command template {self.template.name!r}: working folder {self.cwd!r} does not exist"
        if self.error is not None:
            return self._fail(f"attempt {self.attempt} cannot start: {self.error}")
        if self.interrupted is not None:  # a stop signal came before the command existed
            self._outcome = Outcome("preempted", f"interrupted by {signal.Signals(self.interrupted).name} "
                                    "before the command started", None, 0)
            return self._log(f"attempt {self.attempt} not started: {self._outcome.reason}")
        self._folder_lock = lock_run_folder(self.run_dir)
        if self._folder_lock is None:
            self.error = (f"another trainer (pid {run_folder_holder(self.run_dir) or '?'}) holds "
                          f"{self.run_dir.name}/; not started beside it")
            return self._fail(self.error)
        try:
            self._spawn()
        except OSError as e:
            self._release()
            self.error = f"cannot start the command: {e}"
            self._fail(self.error)

    def _fail(self, message: str) -> None:
        """The attempt ends before its command could start: failed, with `error` as the reason."""
        if self.run_dir.is_dir():
            self._log(message)
        self._outcome = Outcome("failed", self.error, None, 2)

    def _release(self) -> None:
        if self._folder_lock is not None:
            self._folder_lock.close()
            self._folder_lock = None

    def _spawn(self) -> None:
        t = self.template
        assert t is not None
        if not t.resumable:
            self.moved_aside = _set_aside(self.paths, self.attempt)
        if not t.native:
            self.paths.checkpoint_dir.mkdir(parents=True, exist_ok=True)
        # render again: what is on disk now decides resume_from
        self.resumed = bool(self.paths.resume_from(t.resumable))
        self.command = render_command(self.definition, self.run_dir, attempt=self.attempt, srun=self.srun,
                                      template=t)
        env = dict(os.environ)
        env.update(job_environment(self.definition, self.run_dir, attempt=self.attempt, template=t))
        self._log(f"attempt {self.attempt} of run {self.definition.get('run_id', self.run_dir.name)}, "
                  f"template {t.name!r}" + (f", cwd {self.cwd}" if self.cwd else ""))
        if self.moved_aside:
            self._log(f"template {t.name!r} cannot resume: moved the earlier partial files to "
                      f"{self.moved_aside}/ and restart from scratch")
        self._log(f"command: {self.command}")
        self._pump = None if t.native else ProgressPump(self.definition, self.paths, t)
        log = open(self.log_path, "ab")
        try:
            # the command inherits the run folder's lock: it stays held while any of it lives
            self._proc = subprocess.Popen(
                [*_shell(), _TRAPS + self.command], stdin=subprocess.DEVNULL, stdout=log,
                stderr=subprocess.STDOUT, env=env, cwd=self.cwd, start_new_session=True, close_fds=True,
                pass_fds=(self._folder_lock.fileno(),), preexec_fn=_die_with_parent(),
            )
        finally:
            log.close()
        if self.interrupted is not None:  # interrupt() ran while we were spawning
            os.killpg(self._proc.pid, self.interrupted)  # start_new_session: the child leads its group

    def interrupt(self, sig: int = signal.SIGUSR1) -> None:
        """Forward a time-limit/preemption signal to the command's whole process group. Safe to call
        from a signal handler, more than once, and after the command ended (then a no-op)."""
        if self.template is not None and self.template.stop_signal:
            sig = getattr(signal, f"SIG{self.template.stop_signal}")
        if self._proc is not None and self._proc.poll() is not None:
            return
        if self.interrupted is None:
            self.interrupted = int(sig)
        if self._proc is not None:  # else not started (yet): start() will not spawn, or will forward it
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self._proc.pid, sig)  # start_new_session: the child's pid is its group's id

    def poll(self) -> Optional[int]:
        return None if self._proc is None else self._proc.poll()

    def wait(self, timeout: Optional[float] = None) -> Optional[Outcome]:
        """The outcome once the command ended; None if it is still running after `timeout` s."""
        if self._outcome is not None:
            return self._outcome
        if not self._started:
            raise RuntimeError("wait() before start()")
        deadline = None if timeout is None else time.monotonic() + timeout
        last_pump = 0.0
        while True:
            rc = self._proc.poll()
            if rc is not None:
                break
            now = time.monotonic()
            if self._pump is not None and now - last_pump >= PUMP_S:
                self._pump.pump()
                last_pump = now
            if deadline is not None and now >= deadline:
                return None
            time.sleep(POLL_S if deadline is None else max(0.0, min(POLL_S, deadline - now)))
        # wait() may be re-entered from a signal handler (submitit's checkpoint() calls
        # interrupt() then wait()) while this frame is finishing: an RLock lets the inner call
        # finish the attempt; the outer one then returns the same outcome.
        with self._lock:
            if self._outcome is None:
                outcome = self._finish(rc)
                if self._outcome is None:
                    self._outcome = outcome
            return self._outcome

    def _finish(self, rc: int) -> Outcome:
        # a command's helpers (torchrun workers, a backgrounded writer) may outlive the leader
        end = time.monotonic() + DRAIN_S
        while _group_alive(self._proc.pid) and time.monotonic() < end:
            time.sleep(POLL_S)
            if self._outcome is not None:  # finished by a re-entrant wait()
                return self._outcome
        self._release()
        wall = time.time() - self._t0
        wall_total = self._total_wall(wall)
        try:
            outcome = collect_result(self.definition, self.run_dir, rc, self.log_path, attempt=self.attempt,
                                     interrupted=self.interrupted, wall_s=wall_total,
                                     template=self.template, pump=self._pump, moved_aside=self.moved_aside)
        except Exception as e:  # never let a bookkeeping error pass for a result
            outcome = Outcome("failed", f"collecting the result failed: {type(e).__name__}: {e}", None, rc)
        self._log(f"exit code {rc} after {wall:.1f} s: {outcome.state}"
                  + (f" ({outcome.reason})" if outcome.reason else ""))
        record = {**outcome.to_json(), "attempt": self.attempt, "run_id": self.definition.get("run_id"),
                  "template": self.template.name, "command": self.command, "wall_s": wall,
                  "resumed": self.resumed, "wall_total_s": wall_total,
                  "interrupted": self.interrupted and signal.Signals(self.interrupted).name,
                  "moved_aside": self.moved_aside, "started_at": self._t0, "ended_at": time.time()}
        try:
            write_json_atomic(self.run_dir / f"attempt-{self.attempt}.outcome.json", record)
        except OSError:
            pass
        return outcome

    def _total_wall(self, wall: float) -> float:
        """The wall time of the training behind this attempt's result: this attempt, plus, when it
        resumed from a checkpoint, the total of the attempt before it (whose checkpoint that was,
        whatever its state). An attempt that restarted from scratch counts from zero: the time of
        the work it discarded is not in its result."""
        if not self.resumed:
            return wall
        earlier = []
        for p in self.run_dir.glob("attempt-*.outcome.json"):
            try:
                rec = json.loads(p.read_text())
            except (OSError, ValueError):
                continue
            if isinstance(rec.get("attempt"), int) and rec["attempt"] < self.attempt:
                earlier.append(rec)
        if not earlier:
            return wall
        prev = max(earlier, key=lambda r: r["attempt"])
        return wall + float(prev.get("wall_total_s", prev.get("wall_s")) or 0.0)


def run_to_end(run_dir: Path, *, attempt: int, srun: bool = False) -> Outcome:
    """Start one attempt and wait for its outcome (no signal handling: see `forward_signals`)."""
    run = CommandRun(run_dir, attempt=attempt, srun=srun)
    run.start()  # a run that cannot start ends as failed, with the reason
    out = run.wait()
    assert out is not None
    return out


@contextlib.contextmanager
def forward_signals(run: CommandRun, signals: Sequence[int] = (signal.SIGTERM, signal.SIGUSR1)) -> Iterator[CommandRun]:
    """While inside, the listed signals received by this process are forwarded to the command
    (`run.interrupt(sig)`) instead of killing it; the previous handlers come back on exit.
    Main thread only (Python delivers signals there)."""
    if threading.current_thread() is not threading.main_thread():
        raise RuntimeError("forward_signals() must be used from the main thread")
    previous = {}

    def handler(signum, frame):  # noqa: ARG001
        run.interrupt(signum)

    try:
        for s in signals:
            previous[s] = signal.signal(s, handler)
        yield run
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


def main(argv: Optional[Sequence[str]] = None) -> int:
    """`python -m isoflop.dispatch.runner RUN_DIR [--attempt N]`: run one attempt by hand
    (SIGTERM/SIGUSR1/SIGINT are forwarded to the command); prints the outcome as JSON."""
    import argparse

    ap = argparse.ArgumentParser(prog="python -m isoflop.dispatch.runner", description=main.__doc__)
    ap.add_argument("run_dir")
    ap.add_argument("--attempt", type=int, default=None, help="default: run.json's attempt")
    ap.add_argument("--print-command", action="store_true", help="print the command and exit")
    a = ap.parse_args(argv)
    try:
        attempt = a.attempt or int(read_run_json(Path(a.run_dir)).get("attempt") or 1)
        run = CommandRun(Path(a.run_dir), attempt=attempt).check()
    except ValueError as e:
        print(f"isoflop runner: {e}", file=sys.stderr)
        return 2
    if a.print_command:
        print(run.command)
        return 0
    run.start()
    with forward_signals(run, (signal.SIGTERM, signal.SIGUSR1, signal.SIGINT)):
        out = run.wait()
    assert out is not None
    print(json.dumps(out.to_json()))
    return {"completed": 0, "diverged": 0, "preempted": 3}.get(out.state, 1)


if __name__ == "__main__":
    sys.exit(main())
