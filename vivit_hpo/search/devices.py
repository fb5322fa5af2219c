"""The device a worker trains on: one exclusive ``flock`` per GPU in this user's lock folder, so
that two workers of a machine (or of containers sharing the folder) never train on the same GPU,
and the memory a trial may use there.
"""

from __future__ import annotations

import errno
import fcntl
import logging
import os
import stat
import tempfile
from pathlib import Path
from typing import IO

import torch

from vivit_hpo import settings
from vivit_hpo.errors import ConfigError
from vivit_hpo.search.schema import StudySpec

__all__ = ["claim_gpu", "gpu_lock_dir", "memory_cap_bytes"]

_log = logging.getLogger(__name__)

_GPU_LOCKS: list[IO[str]] = []  # held for the life of the process

ENV_GPU_LOCK_DIR = settings.GPU_LOCK_DIR.name
_LOCK_FIX = f"set {ENV_GPU_LOCK_DIR} to a folder of your own"


def gpu_lock_dir() -> Path:
    """The folder of this user's GPU locks, created (mode 0700) if it is not there.

    ``$VIVIT_HPO_GPU_LOCK_DIR`` when set (:data:`vivit_hpo.settings.GPU_LOCK_DIR`; containers
    share one through a bind mount), else ``$XDG_RUNTIME_DIR/vivit-hpo/gpu-locks`` (when that
    is this user's folder), else ``<tmp>/vivit-hpo-<uid>/gpu-locks``. A folder shared by every
    user would let one user's lock files stop another's workers, and a symlink planted there
    would make a worker truncate whatever file it points to, so the per-user folder (and its
    parent) must be a real folder owned by this user that no one else may write.

    Raises:
        ConfigError: the folder cannot be created, or is a symlink, another user's, or
            writable by others.
    """
    override = settings.GPU_LOCK_DIR.get()
    if override is not None:
        _make_lock_folder(override, override=True)
        return override
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    if runtime and os.path.isabs(runtime) and _own_folder(Path(runtime)):
        base = Path(runtime) / "vivit-hpo"
    else:
        base = Path(tempfile.gettempdir()) / f"vivit-hpo-{os.getuid()}"
    folder = base / "gpu-locks"
    _make_lock_folder(base, override=False)
    _make_lock_folder(folder, override=False)
    return folder


def _own_folder(path: Path) -> bool:
    """Whether ``path`` is a folder of this user's (``su`` keeps another's XDG_RUNTIME_DIR)."""
    try:
        st = os.stat(path)
    except OSError:
        return False
    return stat.S_ISDIR(st.st_mode) and st.st_uid == os.getuid()


def _make_lock_folder(folder: Path, *, override: bool) -> None:
    """Create ``folder`` (0700) unless it is there; unless it was chosen by hand (``override``),
    refuse one that is a symlink, not a folder, another user's, or writable by others.

    Raises:
        ConfigError: one line naming the folder, what is wrong and the fix.
    """
    try:
        folder.mkdir(mode=0o700, parents=override, exist_ok=True)
    except FileExistsError:
        pass  # a file, or a symlink to nowhere: named below
    except OSError as e:
        fix = f"pass a folder you can write in {ENV_GPU_LOCK_DIR}" if override else _LOCK_FIX
        raise ConfigError(
            f"GPU lock folder {folder}: cannot be created ({e.strerror or e}); {fix}"
        ) from e
    if override:
        # Chosen by hand, perhaps shared on purpose: the lock files are opened safely in it.
        if not folder.is_dir():
            raise ConfigError(
                f"GPU lock folder {folder}: is not a folder; pass a folder in {ENV_GPU_LOCK_DIR}"
            )
        return
    st = os.lstat(folder)
    why = ""
    if stat.S_ISLNK(st.st_mode):
        why = "is a symlink"
    elif not stat.S_ISDIR(st.st_mode):
        why = "is not a folder"
    elif st.st_uid != os.getuid():
        why = f"belongs to uid {st.st_uid}, not to you (uid {os.getuid()})"
    elif st.st_mode & 0o022:
        why = f"can be written by others (mode {stat.S_IMODE(st.st_mode):o})"
    if why:
        raise ConfigError(f"GPU lock folder {folder}: {why}; remove it, or {_LOCK_FIX}")


def _open_lock(path: Path) -> int:
    """A file descriptor of the lock file ``path``, created 0600 if it is not there.

    ``O_NOFOLLOW``: a symlink planted at ``path`` is refused (ELOOP), not followed, and
    anything but a plain file of one link (a FIFO, a hard link to another file) is refused too.

    Raises:
        OSError: the file cannot be opened, or is not a plain file of its own.
    """
    flags = os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
    fd = os.open(path, flags, 0o600)
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode) or st.st_nlink != 1:
        os.close(fd)
        raise OSError(errno.EPERM, "not a plain file of its own (a link or a device)", str(path))
    return fd


def _lock_gpu(folder: Path, index: int) -> IO[str] | None:
    """An exclusive ``flock`` on ``<folder>/gpu-<index>.lock`` holding this pid, or None when
    another process holds it.

    Raises:
        OSError: the lock file cannot be opened (see :func:`_open_lock`).
    """
    f = os.fdopen(_open_lock(folder / f"gpu-{index}.lock"), "r+")  # held until the process ends
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        f.close()
        return None
    f.seek(0)
    f.truncate()
    f.write(f"{os.getpid()}\n")
    f.flush()
    _GPU_LOCKS.append(f)
    return f


def _holder(folder: Path, index: int) -> str:
    pid = ""
    try:
        fd = os.open(folder / f"gpu-{index}.lock", os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
        with os.fdopen(fd) as f:
            pid = f.read(32).strip()
    except (OSError, UnicodeDecodeError):
        pass
    return f"worker pid {pid}" if pid.isdigit() else "another worker"


def _unopenable(folder: Path, index: int, e: OSError) -> str:
    return f"cannot open its lock {folder / f'gpu-{index}.lock'} ({e.strerror or e})"


def claim_gpu(device: str, device_count: int, lock_dir: Path | None = None) -> str:
    """Lock the GPU this worker trains on, so that two workers of a machine never share one.

    ``cuda:any`` takes the first GPU that no other worker holds (skipping one whose lock file
    cannot be opened); ``cuda:i`` (``cuda`` is ``cuda:0``) takes GPU i, or fails if another
    worker holds it. Each worker takes an exclusive ``flock`` on ``<lock_dir>/gpu-<i>.lock``,
    released when the process exits (however it exits). Containers on one host share the lock
    folder through a bind mount (docker-compose.yml mounts it), so ``--scale worker=N`` spreads
    N workers over N GPUs. ``lock_dir``: :func:`gpu_lock_dir` (this user's folder, or
    ``$VIVIT_HPO_GPU_LOCK_DIR``).

    Returns:
        ``cuda:<i>``, the GPU locked.

    Raises:
        ConfigError: no GPU here, no GPU i, GPU i held by another worker or its lock file
            unopenable, (``cuda:any``) no GPU free, or a lock folder that is not safe to use.
    """
    if device_count < 1:
        raise ConfigError(f"--device {device}: CUDA is not available here; use --device cpu")
    if lock_dir is None:
        folder = gpu_lock_dir()
    else:
        folder = lock_dir
        _make_lock_folder(folder, override=True)
    if device != "cuda:any":
        _, _, raw = device.partition(":")
        if raw and not raw.isdigit():
            raise ConfigError(f"--device {device!r}: expected cuda, cuda:i or cuda:any")
        index = int(raw or 0)
        if index >= device_count:
            raise ConfigError(f"--device {device}: only {device_count} CUDA device(s) here")
        try:
            locked = _lock_gpu(folder, index)
        except OSError as e:
            raise ConfigError(
                f"--device {device}: {_unopenable(folder, index, e)}; remove that file, pass "
                f"--device cuda:any, or {_LOCK_FIX}"
            ) from e
        if locked is None:
            raise ConfigError(
                f"--device {device}: GPU {index} is held by {_holder(folder, index)} "
                f"(lock {folder / f'gpu-{index}.lock'}); pass --device cuda:any or another GPU"
            )
        return f"cuda:{index}"
    unopenable: list[str] = []
    for i in range(device_count):
        try:
            if _lock_gpu(folder, i) is not None:
                return f"cuda:{i}"
        except OSError as e:
            unopenable.append(f"GPU {i}: {_unopenable(folder, i, e)}")
            _log.warning("--device cuda:any skips GPU %d: %s", i, _unopenable(folder, i, e))
    if unopenable:
        held = device_count - len(unopenable)
        raise ConfigError(
            f"--device cuda:any: no GPU is free ({held} held by other workers; "
            f"{unopenable[0]}{' and more' if len(unopenable) > 1 else ''}); remove the lock "
            f"files that are not yours, or {_LOCK_FIX}"
        )
    raise ConfigError(
        f"--device cuda:any: all {device_count} GPUs are held by other workers "
        f"(locks in {folder}); start fewer workers or pass --device cuda:i"
    )


def memory_cap_bytes(spec: StudySpec, device: torch.device) -> int:
    """The memory a trial may use: ``feasibility.max_memory_gb``, else the device's total (GPU)
    or physical RAM (CPU), times ``feasibility.memory_fraction``."""
    f = spec.feasibility
    if f.max_memory_gb is not None:
        return int(f.max_memory_gb * 2**30)
    if device.type == "cuda":
        total = torch.cuda.get_device_properties(device).total_memory
    else:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    return int(total * f.memory_fraction)
