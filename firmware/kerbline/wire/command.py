"""Commands from the gateway: {1: version, 10: cid, 11: op, 12: args}, inside the same COSE envelope.

`parse` refuses anything the device could misread (unknown op, missing or mistyped args) with
`bad_command`; refusing a cid already applied (`replay`) is the application's job, since only it knows
which cids it has applied.
"""
from kerbline.compat import const
from kerbline.wire import cbor
from kerbline.wire.reject import BAD_COMMAND, BAD_VERSION, Reject

VERSION = const(1)
K_VERSION = const(1)
_K_CID = const(10)
_K_OP = const(11)
_K_ARGS = const(12)
# argument keys, shared with the report keys they refer to
A_BOOT = const(2)
A_SEQ = const(3)
A_TIME = const(4)

OPS = ("ack", "time", "config", "reboot", "ping")


def encode(cid, op, args=None):
    """The command payload (the gateway's side; used by the simulator and the tests)."""
    return cbor.dumps({K_VERSION: VERSION, _K_CID: cid, _K_OP: op, _K_ARGS: args or {}})


def _uint(value):
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _check(ok):
    if not ok:
        raise Reject(BAD_COMMAND)


def parse(payload):
    """Return (cid, op, args) or raise Reject (bad_cbor, too_deep, too_large, bad_version, bad_command)."""
    command = cbor.loads(payload)
    _check(isinstance(command, dict))
    version = command.get(K_VERSION)
    _check(_uint(version))
    if version != VERSION:
        raise Reject(BAD_VERSION)
    _check(len(command) == 4)
    cid = command.get(_K_CID)
    op = command.get(_K_OP)
    args = command.get(_K_ARGS)
    _check(_uint(cid) and op in OPS and isinstance(args, dict))
    if op == "ack":
        _check(len(args) == 2 and _uint(args.get(A_BOOT)) and _uint(args.get(A_SEQ)))
    elif op == "time":
        _check(len(args) == 1 and _uint(args.get(A_TIME)))
    elif op == "config":
        for key in args:
            _check(isinstance(key, str))
    else:
        _check(not args)
    return cid, op, args
