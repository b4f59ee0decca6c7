# The embedded corpus: speech synthesised offline from real English sentences.

CORPUS_DIR = f"{DATA}/corpus"


def manifest(kind, split):
    return f"{CORPUS_DIR}/manifests/embedded_{kind}_{split}.jsonl.gz"


rule prepare_corpus:
    output:
        recordings=[manifest("recordings", s) for s in SPLITS],
        supervisions=[manifest("supervisions", s) for s in SPLITS],
        stats=f"{CORPUS_DIR}/manifests/embedded_stats.json",
    params:
        corpus=as_json(config["corpus"]),
        out_dir=CORPUS_DIR,
    threads: config["corpus"].get("num_jobs", 1)
    log:
        f"{DATA}/logs/prepare_corpus.log",
    shell:
        "streamkd prepare-embedded --corpus-config {params.corpus:q}"
        " --out-dir {params.out_dir} --num-jobs {threads} > {log} 2>&1"
