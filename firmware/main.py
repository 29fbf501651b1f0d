# main.py runs after boot.py: the Kerbline application (kerbline/startup.py says what happens).
from kerbline import startup

startup.main()
