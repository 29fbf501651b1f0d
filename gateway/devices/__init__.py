"""Step 5 of the pipeline: device state, offline alarms, and commands with their delivery status."""
from gateway.devices.cids import CidStore
from gateway.devices.commands import CommandBook, CommandEntry, CommandRefused, Status, TooManyCommands
from gateway.devices.tracker import CommandLink, DeviceState, DeviceTracker

__all__ = ["CidStore", "CommandBook", "CommandEntry", "CommandLink", "CommandRefused", "DeviceState", "DeviceTracker",
           "Status", "TooManyCommands"]
