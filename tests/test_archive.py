"""Archived records rebuild the same tables as the experiment they were copied from."""

import pandas as pd
import pytest

from streamkd.results.archive import archive_records
from streamkd.results.load import find_records
from streamkd.results.table_writer import aggregate

from results_factory import utterance_errors as ue
from results_factory import write_run


def test_archive_copies_records_with_their_files_and_rebuilds_the_same_table(tmp_path):
    exp = tmp_path / "exp"
    write_run(exp, "teacher", method="teacher", chunk=None, errors={"test": ue(5)})
    write_run(exp, "none-chunk4-seed1", errors={"test": ue(12)})
    write_run(exp, "aux-chunk4-seed1", method="aux", kd_layers="2,4", apc_shift=0, errors={"test": ue(9)})
    (exp / "none-chunk4-seed1" / "model.pt").write_bytes(b"weights that must not be copied")
    copied = archive_records(exp, tmp_path / "kept")
    assert len(copied) == 3 and all(p.is_file() for p in copied)
    assert not list((tmp_path / "kept").rglob("model.pt"))
    assert (tmp_path / "kept/aux-chunk4-seed1/decode/test-ctc-1best/errors.jsonl").is_file()
    assert (tmp_path / "kept/aux-chunk4-seed1/train_summary.json").is_file()
    original = aggregate(find_records(exp), tmp_path / "t1")["wer"].summary
    archived = aggregate(find_records(tmp_path / "kept"), tmp_path / "t2")["wer"].summary
    columns = ["model", "chunk_size", "wer_mean", "rel_reduction", "gap_recovered", "ci_low", "ci_high"]
    pd.testing.assert_frame_equal(original[columns].reset_index(drop=True), archived[columns].reset_index(drop=True))


def test_a_record_naming_a_missing_file_is_refused(tmp_path):
    exp = tmp_path / "exp"
    write_run(exp, "none-chunk4-seed1", errors={"test": ue(12)})
    (exp / "none-chunk4-seed1/decode/test-ctc-1best/errors.jsonl").unlink()
    with pytest.raises(FileNotFoundError, match="names .*errors.jsonl, which does not exist"):
        archive_records(exp, tmp_path / "kept")
