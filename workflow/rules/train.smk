# The full-context teacher and the streaming students of the grid (one job per grid cell).

TRAIN_INPUTS = dict(
    train=checked_cuts("train"),
    dev=checked_cuts("dev"),
    bpe=BPE_MODEL,
)
# One command for both roles: the teacher adds its seed, a student its grid cell's arguments.
# The launcher (workflow/rules/resources.smk) is a param, so a change to it reruns training.
TRAIN_SHELL = (
    "{params.launcher}streamkd train --role {params.role} --train-cuts {input.train}"
    " --dev-cuts {input.dev} --bpe-model {input.bpe} --out-dir {params.out_dir}"
    " --encoder {params.encoder:q} --optimisation {params.optimisation:q}"
    " --head {params.head:q} --threads {threads} {params.role_args} > {log} 2>&1"
)


rule train_teacher:
    input:
        **TRAIN_INPUTS,
    output:
        model=f"{EXP}/{TEACHER_RUN}/model.pt",
        summary=f"{EXP}/{TEACHER_RUN}/train_summary.json",
    params:
        launcher=TRAIN_LAUNCHER,
        role="teacher",
        out_dir=lambda w, output: parent_dir(output.model),
        encoder=as_json(config["model"]["teacher"]),
        optimisation=as_json(config["training"]["teacher"]),
        head=as_json(HEAD),
        role_args=teacher_args,
    threads: TRAIN_THREADS
    resources:
        **RESOURCES["train"],
    log:
        f"{EXP}/{TEACHER_RUN}/log/train.log",
    benchmark:
        f"{EXP}/{TEACHER_RUN}/benchmark/train.tsv"
    conda:
        CONDA_ENV
    shell:
        TRAIN_SHELL


rule train_student:
    input:
        **TRAIN_INPUTS,
        teacher=teacher_for,
    output:
        model=f"{EXP}/{{student}}/model.pt",
        summary=f"{EXP}/{{student}}/train_summary.json",
    params:
        launcher=TRAIN_LAUNCHER,
        role="student",
        out_dir=lambda w, output: parent_dir(output.model),
        encoder=as_json(config["model"]["student"]),
        optimisation=as_json(config["training"]["student"]),
        head=as_json(HEAD),
        role_args=student_args,
    wildcard_constraints:
        student=STUDENT_PATTERN,
    threads: kd_train_threads
    # Training is the long path: start it before the decodes of finished runs.
    priority: 10
    resources:
        **RESOURCES["train"],
    log:
        f"{EXP}/{{student}}/log/train.log",
    benchmark:
        f"{EXP}/{{student}}/benchmark/train.tsv"
    conda:
        CONDA_ENV
    shell:
        TRAIN_SHELL
