"""Utilities for developers: finding host synchronisations in GPU code on any device."""

from lightly_derm.utils.host_sync import HostSync, HostSyncRecorder, record_host_syncs

__all__ = ["HostSync", "HostSyncRecorder", "record_host_syncs"]
