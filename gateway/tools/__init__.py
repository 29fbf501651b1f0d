"""The technician's tools: build the firmware, provision, flash, verify and watch devices."""
