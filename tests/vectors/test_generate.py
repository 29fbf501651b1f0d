"""The committed vectors are exactly what generate.py makes, and its primitives match their standards."""
from __future__ import annotations

import ast
import binascii
import json
import subprocess
import sys
from pathlib import Path

import cbor2
from cobs import cobs  # type: ignore[import-untyped]  # no stubs

HERE = Path(__file__).resolve().parent
GENERATOR = HERE / "generate.py"


def _tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*.json"))}


def test_committed_vectors_match_a_fresh_run(tmp_path: Path) -> None:
    subprocess.run([sys.executable, str(GENERATOR), str(tmp_path)], check=True, capture_output=True)
    fresh = _tree(tmp_path)
    committed = _tree(HERE)
    assert sorted(fresh) == sorted(committed), "vector files added or removed: re-run generate.py"
    stale = [name for name in fresh if fresh[name] != committed[name]]
    assert not stale, f"stale vectors (re-run generate.py): {stale}"


def test_generator_imports_no_project_code() -> None:
    tree = ast.parse(GENERATOR.read_text())
    roots: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            roots.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            roots.add(node.module.split(".")[0])
    assert not roots & {"gateway", "kerbline", "simulator", "firmware", "tests"}


def test_crc_is_ccitt_false() -> None:
    """binascii.crc_hqx with init 0xFFFF is CRC-16/CCITT-FALSE: its catalogued check value is 0x29B1."""
    assert binascii.crc_hqx(b"123456789", 0xFFFF) == 0x29B1


def test_valid_cases_are_internally_consistent() -> None:
    """Each valid case's fields agree with each other when taken apart with cbor2 and cobs."""
    cases = [json.loads(p.read_text()) for p in sorted((HERE / "valid").glob("*.json"))]
    assert len(cases) >= 10
    for case in cases:
        message = bytes.fromhex(case["cose"])
        envelope = cbor2.loads(message)
        assert envelope.tag == 17
        protected, unprotected, payload, tag = envelope.value
        assert protected.hex() == case["protected"] and payload.hex() == case["payload"]
        assert unprotected == {} and len(tag) == 8
        assert cbor2.loads(protected) == {1: 4, 4: case["device"].encode()}
        assert cbor2.loads(bytes.fromhex(case["mac_structure"])) == ["MAC0", protected, b"", payload]
        wire = bytes.fromhex(case["frame"])
        assert wire.endswith(b"\x00") and wire.count(0) == 1
        body = cobs.decode(wire[:-1])
        assert body[:-2] == message
        assert int.from_bytes(body[-2:], "big") == binascii.crc_hqx(message, 0xFFFF)


def test_bin_report_fits_the_size_budget() -> None:
    """protocol.md: a bin report (fill, dist, temp, batt, with time) is at most 90 bytes as COSE."""
    case = json.loads((HERE / "valid" / "report_bin.json").read_text())
    assert len(bytes.fromhex(case["cose"])) <= 90
