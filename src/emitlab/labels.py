"""The EMit label sets."""

from __future__ import annotations

#: Subtask A: the ten emotion labels, in the official column order.
TASK_A_LABELS: list[str] = [
    "Anger",
    "Anticipation",
    "Disgust",
    "Fear",
    "Joy",
    "Love",
    "Neutral",
    "Sadness",
    "Surprise",
    "Trust",
]
#: Subtask B: is the emotion directed at the topic / is it about the topic.
TASK_B_LABELS: list[str] = ["Direction", "Topic"]

TASKS: dict[str, list[str]] = {"A": TASK_A_LABELS, "B": TASK_B_LABELS}

#: The label that EMit's annotation never combines with another one.
NEUTRAL = "Neutral"


def labels_for_task(task: str) -> list[str]:
    try:
        return list(TASKS[task.upper()])
    except KeyError:
        raise ValueError(f"unknown task {task!r}: expected one of {sorted(TASKS)}") from None
