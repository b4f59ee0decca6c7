# The full-context teacher and the streaming students of the grid (one job per grid cell).

TRAIN_INPUTS = dict(
    train=checked_cuts("train"),
    dev=checked_cuts("dev"),
    bpe=BPE_MODEL,
)
TRAIN_SHELL = (
    TRAIN_LAUNCHER + "streamkd train --role {params.role} --train-cuts {input.train}"
    " --dev-cuts {input.dev} --bpe-model {input.bpe} --out-dir {params.out_dir}"
    " --encoder {params.encoder:q} --optimisation {params.optimisation:q} --seed {params.seed}"
    " --head {params.head:q} --threads {threads} {params.streaming} > {log} 2>&1"
)


rule train_teacher:
    input:
        **TRAIN_INPUTS,
    output:
        model=f"{EXP}/{TEACHER_RUN}/model.pt",
        summary=f"{EXP}/{TEACHER_RUN}/train_summary.json",
    params:
        role="teacher",
        out_dir=f"{EXP}/{TEACHER_RUN}",
        encoder=as_json(config["model"]["teacher"]),
        optimisation=as_json(config["training"]["teacher"]),
        seed=config["training"].get("teacher_seed", 0),
        streaming="",
        head=as_json(HEAD),
    threads: TRAIN_THREADS
    resources:
        **RESOURCES["train"],
    log:
        f"{EXP}/{TEACHER_RUN}/log/train.log",
    shell:
        TRAIN_SHELL


def teacher_for(wildcards):
    """KD students read the teacher's checkpoint; the baseline needs none."""
    return [] if STUDENTS[wildcards.student].method == "none" else [TEACHER_MODEL]


def distillation_args(wildcards):
    cell = STUDENTS[wildcards.student]
    args = cell.train_args()
    if cell.method != "none":
        args += [
            "--kd", as_json(config["kd"]),
            "--teacher", TEACHER_MODEL,
            "--teacher-encoder", as_json(config["model"]["teacher"]),
        ]
    return shell_args(args)


rule train_student:
    input:
        **TRAIN_INPUTS,
        teacher=teacher_for,
    output:
        model=f"{EXP}/{{student}}/model.pt",
        summary=f"{EXP}/{{student}}/train_summary.json",
    params:
        out_dir=lambda w: f"{EXP}/{w.student}",
        encoder=as_json(config["model"]["student"]),
        optimisation=as_json(config["training"]["student"]),
        left_chunks=config["model"].get("left_chunks", -1),
        cell=distillation_args,
        head=as_json(HEAD),
    wildcard_constraints:
        student=STUDENT_PATTERN,
    threads: TRAIN_THREADS
    resources:
        **RESOURCES["train"],
    log:
        f"{EXP}/{{student}}/log/train.log",
    shell:
        TRAIN_LAUNCHER + "streamkd train --role student --train-cuts {input.train}"
        " --dev-cuts {input.dev} --bpe-model {input.bpe} --out-dir {params.out_dir}"
        " --encoder {params.encoder:q} --optimisation {params.optimisation:q}"
        " --left-chunks {params.left_chunks} --head {params.head:q} --threads {threads} {params.cell} > {log} 2>&1"
