# Tokens (sentencepiece BPE), a word n-gram LM, and the k2 decoding graphs built over them.

BPE_MODEL = f"{DATA}/lang/bpe.model"
CTC_TOPO = f"{DATA}/lang/ctc_topo.pt"
HLG = f"{DATA}/lang/HLG.pt"
LM_ORDER = config["decoding"]["lm"]["order"]
TRAINED_LM = f"{DATA}/lang/lm_{LM_ORDER}gram.arpa"
# An external ARPA LM (e.g. LibriSpeech's) replaces the one trained on our transcripts.
WORD_LM = config["decoding"]["lm"].get("arpa") or TRAINED_LM


rule train_bpe:
    input:
        cuts=f"{DATA}/fbank/cuts_train.jsonl.gz",
    output:
        model=BPE_MODEL,
    params:
        vocab_size=config["bpe"]["vocab_size"],
        model_type=config["bpe"]["model_type"],
    resources:
        **RESOURCES["default"],
    log:
        f"{DATA}/logs/train_bpe.log",
    conda:
        CONDA_ENV
    shell:
        "streamkd train-bpe --cuts {input.cuts} --model {output.model}"
        " --vocab-size {params.vocab_size} --model-type {params.model_type} > {log} 2>&1"


rule compile_ctc_topo:
    input:
        bpe=BPE_MODEL,
    output:
        graph=CTC_TOPO,
    resources:
        **RESOURCES["default"],
    log:
        f"{DATA}/logs/compile_ctc_topo.log",
    conda:
        CONDA_ENV
    shell:
        "streamkd compile-ctc-topo --bpe-model {input.bpe} --out {output.graph} > {log} 2>&1"


rule train_word_lm:
    input:
        cuts=f"{DATA}/fbank/cuts_train.jsonl.gz",
    output:
        arpa=TRAINED_LM,
    params:
        order=LM_ORDER,
    resources:
        **RESOURCES["default"],
    log:
        f"{DATA}/logs/train_word_lm.log",
    conda:
        CONDA_ENV
    shell:
        "streamkd train-lm --cuts {input.cuts} --order {params.order} --arpa {output.arpa} > {log} 2>&1"


rule compile_hlg:
    input:
        bpe=BPE_MODEL,
        arpa=WORD_LM,
    output:
        graph=HLG,
    params:
        order=LM_ORDER,
    resources:
        **RESOURCES["default"],
    log:
        f"{DATA}/logs/compile_hlg.log",
    benchmark:
        f"{DATA}/benchmarks/compile_hlg.tsv"
    conda:
        CONDA_ENV
    shell:
        "streamkd compile-hlg --bpe-model {input.bpe} --arpa {input.arpa} --order {params.order}"
        " --out {output.graph} > {log} 2>&1"
