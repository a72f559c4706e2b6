"""The goal/hindsight template: the user turn of a hindsight example and of goal-conditioned
generation (see :mod:`lf_widgets.critique_data` for what it means and why it reads as feedback).

Plain strings and nothing else imported, so that sampling, generation and the remote client can
use the one rule without importing the example builders (no import cycle through ``data``).
"""

from __future__ import annotations

__all__ = ["FEEDBACK_REQUEST", "HINDSIGHT_TEMPLATE", "check_goal", "hindsight_prompt", "goal_prompt"]

# The follow-up user turn whose answer is the critique (feedback modelling).
FEEDBACK_REQUEST = "Give feedback on your answer."
# The user turn of a hindsight example and of goal-conditioned generation. ``{feedback}`` is the
# critique the sample received (training) or the goal (generation): feedback *on* the answer.
HINDSIGHT_TEMPLATE = "{prompt}\n\nFeedback on the answer: {feedback}"


def check_goal(goal, name: str = "goal") -> str | None:
    """``goal`` as given when None or a non-empty string, else a ValueError naming ``name``."""
    if goal is not None and (not isinstance(goal, str) or not goal.strip()):
        raise ValueError(f"{name} must be None or a non-empty string, got {goal!r}")
    return goal


def hindsight_prompt(prompt: str, feedback: str) -> str:
    """The user turn ``HINDSIGHT_TEMPLATE`` makes of a prompt and a feedback text."""
    return HINDSIGHT_TEMPLATE.format(prompt=prompt, feedback=feedback.strip())


def goal_prompt(prompt: str, goal: str | None) -> str:
    """The user turn generation sends: ``prompt`` itself, or conditioned on ``goal``.

    The one rule shared by every generation path (``generation.generation_prompt_ids``) and by
    hindsight training, so a goal reads exactly like the feedback the examples were trained on.
    """
    return prompt if goal is None else hindsight_prompt(prompt, goal)
