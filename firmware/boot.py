# boot.py runs first at every boot. Holding the skip pin (config pins.skip, default GPIO 0 = the BOOT
# button) keeps main.py from starting the application, so a technician can always reach the REPL.
try:
    from kerbline import startup

    startup.check_skip()
except Exception as e:  # nothing here may stand between a technician and the REPL
    print("boot.py:", e)
