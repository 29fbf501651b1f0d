"""Virtual links between simulated devices and the gateway, and the faults they suffer.

`serial` (two ptys and a relay: garbage, dropped bytes, unplug/replug), `network` (a device's TCP path to
the broker: network cuts), `broker` (the simulator's own mosquitto: ACLs, restarts), `tap` (decoding
what crosses a link, for counters and the live view), `faults` (playing the world's fault events on them).
"""
