import pytest

from earlyphase.studies.engine.steps import Step, StepError


@pytest.mark.parametrize(
    "text,its", [("500it", 500), ("2ep", 782), ("1ep100it", 491), ("0it", 0), ("0ep", 0), (" 3ep ", 1173)]
)
def test_step_strings(text, its):
    step = Step.parse(text, 391)
    assert step.it == its
    assert Step.parse(f"{step.ep}ep{step.it_in_ep}it", 391) == step


@pytest.mark.parametrize("text", ["500", "it", "ep", "1.5ep", "-1it", "100it1ep", "2 ep", "", "500its", "10e"])
def test_bad_step_strings(text):
    with pytest.raises(StepError, match="500it"):
        Step.parse(text, 391)


def test_step_parts():
    step = Step.parse("3ep5it", 10)
    assert (step.it, step.ep, step.it_in_ep) == (35, 3, 5)
