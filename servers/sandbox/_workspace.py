"""The host directories a box writes to, size-limited, shared by every backend: workspace and control.

As root, the workspace is an ext4 image file (sparse, ``disk_mb`` large) loop-mounted ``nosuid,nodev``
at the workspace directory, so filling it fills only the image. Without root (or without
``mkfs.ext4``/loop devices), it is a plain directory and the disk limit is not enforced; the manager says
so in the sandbox's description. Files survive unmounting: the image is the state.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
from pathlib import Path

import anyio

from servers.sandbox._backend import SANDBOX_GID, SANDBOX_UID, SandboxStateError

__all__ = ["can_limit_disk", "mount_control", "mount_workspace", "unmount_workspace"]

logger = logging.getLogger("sandbox")


def can_limit_disk() -> bool:
    """Whether this process can make loop-mounted workspaces (root, mkfs.ext4, mount, /dev/loop-control)."""
    return (
        os.geteuid() == 0
        and shutil.which("mkfs.ext4") is not None
        and shutil.which("mount") is not None
        and Path("/dev/loop-control").exists()
    )


async def _run(*argv: str) -> None:
    result = await anyio.run_process(list(argv), check=False, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    if result.returncode != 0:
        message = result.stderr.decode(errors="replace").strip()
        raise SandboxStateError(f"{argv[0]} failed (exit {result.returncode}): {message}")


async def mount_workspace(image: Path, mountpoint: Path, *, size_mb: int) -> bool:
    """Make ``mountpoint`` the workspace, creating the image on first use; True when the size is enforced.

    Raises:
        SandboxStateError: The image cannot be made or mounted.
    """
    mountpoint.mkdir(parents=True, exist_ok=True)
    if not can_limit_disk():
        if os.geteuid() == 0:
            os.chown(mountpoint, SANDBOX_UID, SANDBOX_GID)
        return False
    if os.path.ismount(mountpoint):
        return True
    if not image.exists():
        with image.open("wb") as handle:
            handle.truncate(size_mb * 1024 * 1024)
        await _run(
            "mkfs.ext4", "-q", "-F", "-m", "0", "-O", "^has_journal",
            "-E", f"root_owner={SANDBOX_UID}:{SANDBOX_GID}", str(image),
        )  # fmt: skip
        fresh = True
    else:
        fresh = False
    await _run("mount", "-o", "loop,nosuid,nodev,noatime", str(image), str(mountpoint))
    if fresh:
        lost = mountpoint / "lost+found"
        if lost.is_dir():
            lost.rmdir()
    return True


async def unmount_workspace(mountpoint: Path) -> None:
    """Unmount a loop-mounted workspace or a control tmpfs (no-op for a plain directory or one not mounted).

    Raises:
        SandboxStateError: The workspace stays mounted (something still uses it).
    """
    if os.path.ismount(mountpoint):
        await _run("umount", str(mountpoint))


async def mount_control(path: Path) -> None:
    """Make the control directory a tiny tmpfs owned by 65534 (as root; else a plain directory).

    A box can write there (its agent creates its socket), so it must not be able to fill the host's disk.

    Raises:
        SandboxStateError: The tmpfs cannot be mounted.
    """
    path.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0:
        return
    if not os.path.ismount(path):
        options = f"size=256k,nr_inodes=64,mode=0755,uid={SANDBOX_UID},gid={SANDBOX_GID},nosuid,nodev,noexec"
        await _run("mount", "-t", "tmpfs", "-o", options, "dockyard-sandbox-control", str(path))
