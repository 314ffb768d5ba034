"""What a sweep says beside its runs: a closing report of no finished run says so (it printed a header
over nothing), and checkpoints = true names the runs finished before that have no checkpoint (it saved
nothing for them, silently)."""

from __future__ import annotations

from conftest import make_image_folder

from qtl.experiments.spec import parse_spec, plan
from qtl.experiments.stats import NO_RUN_FINISHED, format_report
from qtl.experiments.sweeps import unsaved_done_note


def test_a_report_of_no_finished_run_says_so():
    assert format_report([], None) == NO_RUN_FINISHED
    assert format_report([{"variant": "linear", "seed": 0, "val_acc": None}]) == NO_RUN_FINISHED


def test_checkpoints_of_runs_finished_before_are_named(tmp_path):
    data = make_image_folder(tmp_path / "tiny")
    doc = {"dataset": str(data), "pretrained": False, "variant": ["linear", "rbf-svm"], "seeds": 2}
    spec = parse_spec({**doc, "checkpoints": True}, name="c")
    runs = plan(spec, models_dir=tmp_path / "models")
    note = unsaved_done_note(spec, runs)
    assert "2 runs finished before" in note and "linear on tiny seed 0, linear on tiny seed 1" in note
    assert "rbf-svm" not in note  # a kernel SVM never has one (unsaved_note says so)
    runs[0].checkpoint_path.parent.mkdir(parents=True)
    runs[0].checkpoint_path.write_bytes(b"saved")
    assert "1 run finished before" in unsaved_done_note(spec, runs)
    assert unsaved_done_note(parse_spec(doc), plan(parse_spec(doc))) == ""  # keeps none: nothing to say


def test_the_dry_run_flags_a_circuit_too_wide_for_its_engine(tmp_path):
    from qtl.experiments.sweeps import regime_refusals

    data = make_image_folder(tmp_path / "tiny")
    doc = {"dataset": str(data), "pretrained": False, "variant": "quantum", "qubits": [4, 30]}
    runs = plan(parse_spec({**doc, "engine": ["native", "mps"]}))
    refused = regime_refusals(runs)
    wide = [r for r in runs if r.model_config.circuit.n_qubits == 30 and r.model_config.engine == "native"]
    assert list(refused) == [wide[0].id] and "stops at 24 qubits (30 asked)" in refused[wide[0].id]
