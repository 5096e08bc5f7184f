"""The committed admin stubs match what the generator makes from protos/ today."""

from __future__ import annotations

from pathlib import Path

from pdscale.controller.admin.protogen import GEN_DIR, generate


def test_generated_stubs_are_in_sync(tmp_path: Path) -> None:
    """Regenerating into a temporary folder gives byte-identical files (run scripts/gen_protos.sh if not)."""
    written = generate(tmp_path / "_gen")
    assert written
    for path in written:
        committed = GEN_DIR / path.name
        assert committed.exists(), f"{committed} is missing; run scripts/gen_protos.sh"
        assert committed.read_bytes() == path.read_bytes(), f"{committed} is stale; run scripts/gen_protos.sh"
    assert sorted(p.name for p in written) == sorted(p.name for p in GEN_DIR.iterdir() if p.suffix in {".py", ".pyi"})
