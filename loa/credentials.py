"""The node credentials file (``credentials.csv``): written by ``loa nodes provision``, read by
the provisioning itself and by a simulated fleet that logs in to a secured broker. Its format
is a contract between the two, so it lives here, below both."""

from __future__ import annotations

import csv
from pathlib import Path


class CredentialsFileError(Exception):
    """The file is missing, unreadable or not a Loa credentials file (Vietnamese message)."""


def load_node_passwords(path: Path) -> dict[str, str]:
    """``{node_id: password}`` from a ``credentials.csv`` written by ``loa nodes provision``."""
    try:
        with Path(path).open(encoding="utf-8-sig", newline="") as fh:
            reader = csv.DictReader(fh)
            if not reader.fieldnames or not {"node_id", "mqtt_password"} <= set(reader.fieldnames):
                raise CredentialsFileError(
                    f"{path} không phải tệp mật khẩu của Loa (cần cột node_id, mqtt_password)."
                )
            return {
                row["node_id"]: row["mqtt_password"]
                for row in reader
                if row.get("node_id") and row.get("mqtt_password")
            }
    except OSError as exc:
        raise CredentialsFileError(f"Không đọc được {path}: {exc.strerror}") from None
