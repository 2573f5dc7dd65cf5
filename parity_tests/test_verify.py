"""``texture-nets verify``: the report card of a port, for built-ins, the reproduction of a flawed port and plug-ins.

The --quick battery (the committed Torch7 runs) keeps these tests to seconds; the full battery is what
docs/ports/opencv.md was made with.
"""

from __future__ import annotations

import json

import pytest

from texture_nets.cli import main


def _verify(tmp_path, *args: str) -> tuple[int, dict]:
    code = main(["verify", *args, "--quick", "--quiet", "--out", str(tmp_path)])
    card = json.loads((tmp_path / "card.json").read_text()) if (tmp_path / "card.json").exists() else {}
    return code, card


def test_faithful_backend_agrees_and_the_card_follows_its_schema(tmp_path, capsys):
    from harness.verify.views import validate

    code, card = _verify(tmp_path, "reference")
    assert code == 0 and card["passed"] and card["summary"]["drift"] == 0
    validate(card)
    assert all(case["kind"] == "Torch7" for case in card["cases"])
    float32 = [case for case in card["cases"] if case["dtype"] == "float32"]
    # Measured against Torch7's own rounding on its own runs: a faithful float32 backend is of its order.
    assert all(0.1 < case["output"]["x_rounding"] < 10 for case in float32), [c["output"] for c in float32]
    assert (tmp_path / "card.md").read_text().startswith("# Report card: `reference`")
    html = (tmp_path / "card.html").read_text()
    assert "<svg" in html and html.count("<svg") == len(card["cases"])
    assert "verify reference: AGREES" in capsys.readouterr().out


def test_the_published_port_gets_its_known_deviations(tmp_path):
    pytest.importorskip("tensorflow")
    code, card = _verify(tmp_path, "tf-seed")
    assert code == 1 and not card["passed"]
    pretrained = [case for case in card["cases"] if "pretrained" in case["name"] and case["status"] == "drift"]
    assert pretrained
    for case in pretrained:
        assert case["biggest_divergence"]["reaches_output"] is True
        assert case["biggest_divergence"]["lua_path"] in {"6", "9", "17", "20"}
        found = {d["lua_path"] for d in (case["first_divergence"], case["biggest_divergence"])}
        assert found & {"3", "6"}, found


def test_a_module_factory_plugin_is_verified(tmp_path):
    code, card = _verify(tmp_path, "reference.backend:ReferenceBackend")
    assert code == 0 and card["backend"] == "reference.backend:ReferenceBackend"


def test_unknown_backend_is_one_line_and_exit_2(tmp_path, capsys):
    assert main(["verify", "no-such-port", "--quick", "--out", str(tmp_path)]) == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1


def test_depth_chart_marks_the_paths_outside_the_band():
    from harness.drift.chart import Series, depth_chart

    svg = depth_chart(["1", "2", "3"], [1e-7, 0.5, None], [1e-5, 1e-5, 1e-5],
                      Series("Torch7", [1e-7, 1e-7, 1e-7], "#0a0"), failed=[False, True, False])
    assert svg.startswith("<svg") and svg.count("<circle") == 2
    assert svg.count('fill="#c0392b"') == 1 and "Torch7" in svg
