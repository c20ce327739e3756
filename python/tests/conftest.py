"""Shared fixtures for the phiaudit Python binding tests (run by `meson test python`)."""
from __future__ import annotations

import os

import pytest

import phiaudit


@pytest.fixture
def key_file(tmp_path):
    """A fresh key file (mode 0600) in a temporary directory."""
    path = tmp_path / "audit.key"
    phiaudit.generate_key_file(str(path))
    return str(path)


@pytest.fixture
def log_path(tmp_path):
    return str(tmp_path / "audit.pha")


@pytest.fixture
def mem_logger():
    """A logger with a random in-memory key and a memory sink."""
    lg = phiaudit.Logger.for_testing()
    yield lg
    lg.close()


def pytest_report_header(config):
    return f"phiaudit library: {os.environ.get('PHIAUDIT_LIBRARY', '(default search)')}"
