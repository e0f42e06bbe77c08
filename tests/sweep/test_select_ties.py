"""Selection breaks ties by the order Optuna sampled the trials, so reruns pick the same winners."""

from __future__ import annotations

from sweep.select import Study, TrialRun
from sweep.tracking import TAG_OPTUNA_TRIAL


def _run(key: str, number: int, value: float, architecture: str = "unetpp") -> TrialRun:
    return TrialRun(run_id=f"run-{key}", stage="diw", architecture=architecture, trial_key=key, state="completed",
                    metric="val/whdr", mode="min", value=value, epoch=1, tags={TAG_OPTUNA_TRIAL: str(number)})


def test_a_tie_goes_to_the_trial_sampled_first_whatever_its_ray_id():
    # Ray's trial ids are random per run: here the later-sampled trial has the smaller id.
    first, second = _run("ffff", 0, 0.105), _run("0000", 3, 0.105)
    study = Study(name="s", experiment_id="1", parents={}, trials={"diw": [second, _run("aaaa", 1, 0.2), first]})
    assert [r.trial_key for r in study.ranked("diw")] == ["ffff", "0000", "aaaa"]
    assert study.winners()["diw"]["unetpp"] is first
    assert study.top_k("diw", 1, per_architecture=False) == [first]


def test_a_better_value_still_wins_over_the_sampling_order():
    late_but_better = _run("bbbb", 5, 0.1)
    study = Study(name="s", experiment_id="1", parents={}, trials={"diw": [_run("aaaa", 0, 0.105), late_but_better]})
    assert study.ranked("diw")[0] is late_but_better
