"""Reading benchmark parquet files: split choice, shards, and errors naming file, row and field."""

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from test_eval_command import row, write
from verl_ext.eval.data import choose_splits, clamp_mismatch, load_benchmark


def test_shards_are_read_in_order_and_zerobench_reads_both_variants(tmp_path):
    d = tmp_path / "mathvista"
    d.mkdir()
    for k, idx in enumerate([(0, 1), (2,)]):
        rows = [row("mathvista", "testmini", i, "q", "1", problem_type="open") for i in idx]
        pq.write_table(pa.Table.from_pylist(rows), d / f"testmini-{k:05d}.parquet")
    samples, splits = load_benchmark(tmp_path, "mathvista", ["testmini"])
    assert [s.uid for s in samples] == ["testmini:mathvista-0", "testmini:mathvista-1", "testmini:mathvista-2"]
    assert splits == {"testmini": ["testmini-00000.parquet", "testmini-00001.parquet"]}
    write(tmp_path, "zerobench", "zerobench", [row("zerobench", "zerobench", 0, "q", "1", variant="main")])
    write(tmp_path, "zerobench", "zerobench_subquestions", [row("zerobench", "zerobench_subquestions", 0, "q", "1", variant="subquestions")])
    assert set(choose_splits(tmp_path, "zerobench", ["zerobench_subquestions", "zerobench"])) == {"zerobench_subquestions", "zerobench"}


def test_missing_split_names_what_is_there(tmp_path):
    write(tmp_path, "mmmu", "dev", [row("mmmu", "dev", 0, "q", "A", options=["1"])])
    write(tmp_path, "mmmu", "test", [row("mmmu", "test", 0, "q", "A", options=["1"])])
    with pytest.raises(FileNotFoundError, match=r"none of the splits \['validation'\] found \(have \['dev', 'test'\]\)"):
        load_benchmark(tmp_path, "mmmu", ["validation"])
    with pytest.raises(FileNotFoundError, match="no directory"):
        load_benchmark(tmp_path, "wemath", ["testmini"])


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda r: r.update(data_source="mathvista"), "field 'data_source' is 'mathvista', expected 'mmmu'"),
        (lambda r: r["reward_model"].update(ground_truth=""), "field 'reward_model.ground_truth' is missing or empty"),
        (lambda r: r["extra_info"].update(id=None), "field 'extra_info.id' is missing"),
        (lambda r: r["images"].append({"bytes": b""}), "field 'images\\[1\\].bytes' is missing or empty"),
    ],
)
def test_bad_rows_name_file_row_and_field(tmp_path, edit, message):
    good = row("mmmu", "validation", 0, "q", "A", options=["1", "2"])
    bad = row("mmmu", "validation", 1, "q", "A", options=["1", "2"])
    edit(bad)
    p = write(tmp_path, "mmmu", "validation", [good, bad])
    with pytest.raises(ValueError, match=f"{p} row 1: {message}"):
        load_benchmark(tmp_path, "mmmu", ["validation"])


def test_duplicate_ids_are_an_error(tmp_path):
    r = row("mmmu", "validation", 0, "q", "A", options=["1"])
    p = write(tmp_path, "mmmu", "validation", [r, r])
    with pytest.raises(ValueError, match=rf"{p} row 1: field 'extra_info.id' 'validation:mmmu-0' repeats {p} row 0"):
        load_benchmark(tmp_path, "mmmu", ["validation"])


def test_wemath_rows_need_group_and_key(tmp_path):
    r = row("wemath", "testmini", 0, "q", "A", options=["1", "2"], group_id="3")
    p = write(tmp_path, "wemath", "testmini", [r])
    with pytest.raises(ValueError, match=f"{p} row 0: field 'extra_info.key' is missing"):
        load_benchmark(tmp_path, "wemath", ["testmini"])


def test_image_clamp_from_conversion_is_read_and_a_different_protocol_clamp_warned(tmp_path):
    """Rows written by build_parquet carry each image's clamp; the protocol's clamp is the one the
    evaluation applies, so a different one written at conversion is warned about."""
    from data_prep.build_parquet import build, parse_args
    from fixtures import data_layouts as L

    L.write_mmmu(tmp_path / "src")
    build(parse_args(["mmmu", "--source", str(tmp_path / "src"), "--out-dir", str(tmp_path / "data"), "--quiet"]))
    samples, _ = load_benchmark(tmp_path / "data", "mmmu", ["validation"])
    assert samples and all(s.image_clamps == [(262144, 1048576)] * len(s.images) for s in samples)
    assert clamp_mismatch("mmmu", samples, 262144, 1048576) is None  # the protocol's default
    msg = clamp_mismatch("mmmu", samples, 1024, 4096)
    assert msg.startswith("WARNING: mmmu:") and "262144..1048576" in msg and "1024..4096" in msg
    build(parse_args(["mmmu", "--source", str(tmp_path / "src"), "--out-dir", str(tmp_path / "raw"), "--quiet",
                      "--no-pixel-clamp"]))
    raw, _ = load_benchmark(tmp_path / "raw", "mmmu", ["validation"])
    assert clamp_mismatch("mmmu", raw, 1024, 4096) is None  # no clamp written: nothing to disagree with
