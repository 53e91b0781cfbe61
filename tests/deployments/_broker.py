"""kombu filesystem-broker options shared by the Celery app and the test that enqueues."""

from __future__ import annotations

from pathlib import Path


def broker_options(broker_dir: Path) -> dict[str, object]:
    return {
        "data_folder_in": str(broker_dir / "queue"),
        "data_folder_out": str(broker_dir / "queue"),
        "processed_folder": str(broker_dir / "processed"),
        "control_folder": str(broker_dir / "control"),
        "store_processed": True,
        "polling_interval": 0.05,
    }
