# The corpus: recording and supervision manifests for every split (train, dev, test sets).
# corpus.name selects the embedded synthetic corpus, a LibriSpeech corpus that the user
# keeps in corpus.dir (streamkd/data/corpora.py lists the corpora and their splits), or the
# user's own lhotse manifests (manifests: streamkd/data/manifests.py).

CORPUS_NAME = config["corpus"]["name"]
CORPUS_DIR = f"{DATA}/corpus"


if CORPUS_NAME == "embedded":

    rule prepare_corpus:
        output:
            recordings=[manifest("recordings", s) for s in SPLITS],
            supervisions=[manifest("supervisions", s) for s in SPLITS],
            stats=f"{CORPUS_DIR}/manifests/embedded_stats.json",
        params:
            corpus=as_json(config["corpus"]),
            out_dir=lambda w, output: parent_dir(output.stats, levels=2),
        threads: config["corpus"]["num_jobs"]
        resources:
            **RESOURCES["corpus"],
        log:
            f"{DATA}/logs/prepare_corpus.log",
        benchmark:
            f"{DATA}/benchmarks/prepare_corpus.tsv"
        conda:
            CONDA_ENV
        shell:
            "streamkd prepare-embedded --corpus-config {params.corpus:q}"
            " --out-dir {params.out_dir} --num-jobs {threads} > {log} 2>&1"

elif CORPUS_NAME == "manifests":

    # Your own corpus: lhotse manifests declared per split in corpus.splits (inputs, so a
    # changed manifest prepares the corpus again); checked and combined into the pipeline's
    # train, dev and test splits by streamkd/data/manifests.py.
    rule prepare_manifests:
        input:
            [path for entry in config["corpus"]["splits"].values() for path in entry.values()],
        output:
            recordings=[manifest("recordings", s) for s in SPLITS],
            supervisions=[manifest("supervisions", s) for s in SPLITS],
        params:
            corpus=as_json(config["corpus"]),
            out_dir=f"{CORPUS_DIR}/manifests",
        resources:
            **RESOURCES["corpus"],
        log:
            f"{DATA}/logs/prepare_manifests.log",
        shell:
            "streamkd prepare-manifests --corpus-config {params.corpus:q} --out-dir {params.out_dir} > {log} 2>&1"

else:

    rule prepare_librispeech:
        output:
            recordings=[manifest("recordings", s) for s in SPLITS],
            supervisions=[manifest("supervisions", s) for s in SPLITS],
        params:
            corpus_dir=config["corpus"]["dir"],
            corpus=CORPUS_NAME,
            out_dir=lambda w, output: parent_dir(output.recordings[0]),
        threads: config["corpus"]["num_jobs"]
        resources:
            **RESOURCES["corpus"],
        log:
            f"{DATA}/logs/prepare_librispeech.log",
        benchmark:
            f"{DATA}/benchmarks/prepare_librispeech.tsv"
        conda:
            CONDA_ENV
        shell:
            "streamkd prepare-librispeech --corpus-dir {params.corpus_dir:q} --corpus {params.corpus}"
            " --out-dir {params.out_dir} --num-jobs {threads} > {log} 2>&1"

    # Opt-in: never a dependency of another rule. Fetches the parts the corpus needs into
    # corpus.dir:   snakemake download_librispeech --cores 1 --configfile <config>
    # It runs where Snakemake runs, not as a cluster job (compute nodes often lack internet).
    localrules:
        download_librispeech,

    rule download_librispeech:
        output:
            done=f"{CORPUS_DIR}/download-{CORPUS_NAME}.done",
        params:
            target_dir=config["corpus"]["dir"],
            corpus=CORPUS_NAME,
        resources:
            **RESOURCES["corpus"],
        log:
            f"{DATA}/logs/download_librispeech.log",
        conda:
            CONDA_ENV
        shell:
            "streamkd download-librispeech --target-dir {params.target_dir:q} --corpus {params.corpus}"
            " > {log} 2>&1 && touch {output.done}"
