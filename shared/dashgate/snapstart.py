"""SnapStart: register the Lambda runtime's before-snapshot and after-restore hooks, where it has them."""

from __future__ import annotations

from collections.abc import Callable


def register_hooks(before_snapshot: Callable[[], None], after_restore: Callable[[], None]) -> bool:
    """Hand both hooks to the runtime; False where there is no runtime to hand them to (tests, `make run`)."""
    try:
        # Only Lambda's Python 3.12+ managed runtimes ship this module (the open-source
        # snapshot-restore-py library); the layer does not, so it is absent everywhere else.
        from snapshot_restore_py import register_after_restore, register_before_snapshot
    except ImportError:
        return False
    register_before_snapshot(before_snapshot)
    register_after_restore(after_restore)
    return True
