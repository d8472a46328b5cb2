import os

import pytest

os.environ.setdefault("WANDB_MODE", "disabled")
os.environ.setdefault("WANDB_SILENT", "true")


@pytest.fixture
def out(tmp_path):
    """A fresh runs folder for a test."""
    return tmp_path / "runs"
