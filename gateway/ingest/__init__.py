"""Step 1 of the pipeline: reports in from the serial ports and the MQTT broker.

Both links hand every message to `gateway.verify.Verifier` and acknowledge (serial cumulative `ack`,
MQTT PUBACK) only what the spool has committed. `mqtt5` is the lean MQTT 5 connection they ride on.
"""
