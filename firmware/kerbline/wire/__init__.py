"""The wire contract: codecs shared by the firmware and the simulator's fleet devices."""
