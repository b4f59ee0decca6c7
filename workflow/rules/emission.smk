# Emission delay: reference token times from the full-context teacher (once per test set and
# head), then when each run's decoder emits its tokens (students chunk by chunk, the teacher
# offline as a sanity check) and the delay against those times; a dynamic-chunk student once
# per chunk size it is decoded at (folders METHOD@chunkN, see decode.smk).


rule align_reference:
    input:
        model=TEACHER_MODEL,
        cuts=checked_cuts("{test_set}"),
        bpe=BPE_MODEL,
    output:
        ALIGN_OUT,
    params:
        max_duration=config["decoding"]["max_duration"],
    wildcard_constraints:
        test_set=alternatives(TEST_SETS),
        head="ctc|transducer",
    threads: THREADS
    resources:
        **RESOURCES["decode"],
    log:
        f"{EXP}/{TEACHER_RUN}/log/align-{{test_set}}-{{head}}.log",
    conda:
        CONDA_ENV
    shell:
        "streamkd align-reference --checkpoint {input.model} --cuts {input.cuts} --bpe-model {input.bpe}"
        " --head {wildcards.head} --out {output} --max-duration {params.max_duration} --threads {threads} > {log} 2>&1"


rule emission_delay:
    input:
        model=f"{EXP}/{{run}}/{DECODED_MODEL_FILE}",
        cuts=checked_cuts("{test_set}"),
        bpe=BPE_MODEL,
        graph=decoding_graph,
        teacher_alignment=reference_alignment,
    output:
        emissions=f"{DECODE_OUT}/emissions.jsonl",
        summary=f"{DECODE_OUT}/delay.json",
    params:
        graph=lambda w, input: f"--graph {input.graph}" if input.graph else "",
        search=SEARCH_ARGS,
        chunk=chunk_arg,
    wildcard_constraints:
        test_set=alternatives(TEST_SETS),
        method=alternatives(METHOD_NAMES),
        at_chunk=AT_CHUNK_PATTERN,
    threads: THREADS
    resources:
        **RESOURCES["decode"],
    log:
        f"{EXP}/{{run}}/log/emission-{{test_set}}-{{method}}{{at_chunk}}.log",
    conda:
        CONDA_ENV
    shell:
        "streamkd emission-delay --checkpoint {input.model} --cuts {input.cuts} --bpe-model {input.bpe}"
        " --teacher-alignment {input.teacher_alignment} --method {wildcards.method} {params.chunk} {params.graph}"
        " --emissions {output.emissions} --summary {output.summary} {params.search} --threads {threads} > {log} 2>&1"
