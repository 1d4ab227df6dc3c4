"""Long fuzz run of the instance parsers with atheris (libFuzzer for Python).

    pip install atheris
    python fuzz/fuzz_instance.py -max_total_time=600 fuzz/corpus

Each input is tried as MessagePack (``Instance.from_bytes``) and as JSON text
(``Instance.from_json``): either as it is, or (chosen by its first byte) as a
list of edits applied to a valid seed document. The native extension is not
coverage-instrumented, so libFuzzer's feedback is weak; the edits keep inputs
structurally close to real documents so every layer of the parsers is
reached. The only allowed outcomes are an instance that round-trips or
``SerializationError``; anything else (another exception, a panic, a crash,
a hang) is a finding and libFuzzer saves the input. The
corpus is seeded with valid documents so mutations start from real structure.
The test suite runs a short hypothesis version of the same checks
(tests/bindings/test_serialization_fuzz.py).
"""

from __future__ import annotations

import os
import sys
from datetime import datetime, timezone

import atheris

with atheris.instrument_imports():
    from hephaestus import Instance, SerializationError


class FuzzFlow:
    pass


class FuzzStep:
    pass


def seeds() -> list[bytes]:
    """Valid documents in both forms, to start the corpus from."""
    at = datetime(2024, 5, 1, tzinfo=timezone.utc)
    inst = Instance.new(FuzzFlow, 2, {"items": [1, 2.5, b"\x00"], "$k": {"at": at}}, "orderid::x")
    inst = inst.replace(status="running").activate_step(FuzzStep, {"n": 1})
    done = inst.complete_step(FuzzStep, "done", {"ok": True}, {"m": 1}, timestamp=at)
    return [i.to_bytes() for i in (inst, done)] + [i.to_json().encode() for i in (inst, done)]


def check(load, data) -> None:  # type: ignore[no-untyped-def]
    try:
        inst = load(data)
    except SerializationError:
        return
    assert Instance.from_json(inst.to_json()) == inst
    assert Instance.from_bytes(inst.to_bytes()) == inst


SEEDS = seeds()


def edited_seed(data: bytes) -> bytes:
    """A seed document with byte edits taken from ``data``."""
    provider = atheris.FuzzedDataProvider(data)
    out = bytearray(SEEDS[provider.ConsumeIntInRange(0, len(SEEDS) - 1)])
    for _ in range(provider.ConsumeIntInRange(1, 8)):
        at = provider.ConsumeIntInRange(0, len(out))
        delete = provider.ConsumeIntInRange(0, 8)
        out[at : at + delete] = provider.ConsumeBytes(provider.ConsumeIntInRange(0, 8))
    return bytes(out)


def test_one_input(data: bytes) -> None:
    if data[:1] and data[0] % 4 != 0:
        data = edited_seed(data[1:])
    check(Instance.from_bytes, data)
    check(Instance.from_json, data.decode("utf-8", errors="replace"))


def main() -> None:
    corpus = next((a for a in sys.argv[1:] if not a.startswith("-")), None)
    if corpus:
        os.makedirs(corpus, exist_ok=True)
        for index, seed in enumerate(SEEDS):
            with open(os.path.join(corpus, f"seed-{index}"), "wb") as handle:
                handle.write(seed)
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
