"""The device's links to the gateway: `serial` (COBS frames on a UART) and `mqtt` (its own MQTT 3.1.1 client).

Both take ready-made COSE messages from the store-and-forward queue, keep at most four unacknowledged in
flight, and tell the queue which message was acknowledged so that it drops a report only then.
"""
