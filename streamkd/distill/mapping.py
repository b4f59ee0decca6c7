"""Which teacher layer each distilled student layer is compared with."""

from __future__ import annotations

from typing import List, Optional, Sequence, Tuple


def proportional_layer(student_layer: int, num_student_layers: int, num_teacher_layers: int) -> int:
    """The teacher layer at the same relative depth, rounded up (1-based).

    Equal depths map a layer to itself; the last student layer always maps to the last
    teacher layer, and no student layer maps below teacher layer 1.
    """
    if not 1 <= student_layer <= num_student_layers:
        raise ValueError(f"student layer {student_layer} is outside 1..{num_student_layers}")
    return -(-student_layer * num_teacher_layers // num_student_layers)


def layer_pairs(
    student_layers: Sequence[int],
    num_student_layers: int,
    num_teacher_layers: int,
    teacher_layers: Optional[Sequence[int]] = None,
) -> List[Tuple[int, int]]:
    """(student layer, teacher layer) pairs, 1-based, checked against both depths."""
    for layer in student_layers:
        if not 1 <= layer <= num_student_layers:
            raise ValueError(f"student layer {layer} is outside 1..{num_student_layers} (the student's depth)")
    if teacher_layers is None:
        teacher_layers = [proportional_layer(l, num_student_layers, num_teacher_layers) for l in student_layers]
    if len(teacher_layers) != len(student_layers):
        raise ValueError(
            f"student layers {list(student_layers)} and teacher layers {list(teacher_layers)} differ in number"
        )
    for layer in teacher_layers:
        if not 1 <= layer <= num_teacher_layers:
            raise ValueError(f"teacher layer {layer} is outside 1..{num_teacher_layers} (the teacher's depth)")
    return list(zip(student_layers, teacher_layers))
