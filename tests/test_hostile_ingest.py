"""Hostile input for ingest, the user corpus, degrade and pairs-export (issue 21).

The contract of every command: exit 0 = the work is done and every input that could not be used
is in a quarantine table with its reason; exit 2 = an invalid request, one line naming it. Each
test builds its hostile input here, in tmp_path.
"""

from __future__ import annotations

import json
import math
import os
import stat
import struct
import subprocess
import sys
import tempfile
import tracemalloc
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import soundfile as sf
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import PARAMS, ROOT
from gensr.audio.io import load_audio, read_wav, resample, write_wav
from gensr.config import load_params
from gensr.corpus.ingest import LEDGER_FILE, ingest_directory
from gensr.storage import write_json, write_parquet

SR = 16000
MB = 1 << 20


def speechlike(seconds: float, sr: int = SR, channels: int = 1, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(int(round(seconds * sr))) / sr
    x = sum(np.sin(2 * np.pi * f * t) / k for k, f in enumerate((150, 300, 450, 900), start=1))
    x = (0.2 * x * (0.5 + 0.5 * np.sin(2 * np.pi * 4 * t)) + 0.01 * rng.standard_normal(t.size)).astype(np.float32)
    return x if channels == 1 else np.stack([x * (0.5 + 0.1 * c) for c in range(channels)], axis=1)


def riff(fmt_tag: int, channels: int, rate: int, bits: int, payload: bytes, data_size: int | None = None,
         block_align: int | None = None) -> bytes:
    """A RIFF WAV built by hand, so its header can say anything."""
    block_align = (max(1, channels * bits // 8) if block_align is None else block_align) & 0xFFFF
    fmt = struct.pack("<HHIIHH", fmt_tag, channels, rate, (rate * block_align) & 0xFFFFFFFF, block_align, bits)
    size = len(payload) if data_size is None else data_size
    body = b"WAVE" + b"fmt " + struct.pack("<I", len(fmt)) + fmt + b"data" + struct.pack("<I", size) + payload
    return b"RIFF" + struct.pack("<I", len(body) & 0xFFFFFFFF) + body


def loud_pcm16(n: int, seed: int = 0) -> bytes:
    return np.random.default_rng(seed).integers(-20000, 20000, n).astype("<i2").tobytes()


def params(*overrides):
    return load_params(PARAMS, list(overrides))


def reasons(out: Path) -> dict[str, str]:
    """quarantine.parquet as {path relative to out: reason}."""
    table = pd.read_parquet(out / "quarantine.parquet")
    return dict(zip(table["path"], table["reason"]))


def wav_frames(out: Path) -> dict[str, int]:
    return {p.relative_to(out).as_posix(): sf.info(str(p)).frames for p in sorted(out.rglob("*.wav"))}


def files_outside(root: Path, *allowed: Path) -> list[str]:
    allowed = [a.resolve() for a in allowed]
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*")
                  if p.is_file() and not any(p.resolve().is_relative_to(a) for a in allowed))


def cli(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    """The real `gensr` entry point in a child process (a FIFO that got opened would hang it: the timeout fails)."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(ROOT), os.environ.get("PYTHONPATH", "")])}
    code = "import sys; from gensr.cli import main; sys.argv = ['gensr', *sys.argv[1:]]; main()"
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=timeout, env=env)


def error_lines(result: subprocess.CompletedProcess) -> list[str]:
    return [line for line in result.stderr.splitlines() if line.strip()]


# ------------------------------------------------------------------ 1. trust nothing a header says


@pytest.mark.parametrize("name, data, reason, param", [
    # 8 KB of loud samples whose header claims 1 Hz: before, a 4000 s file in 200 parts (256 MB)
    ("one_hz.wav", riff(1, 1, 1, 16, loud_pcm16(4000)), "implausible_header", "ingest.min_sample_rate"),
    ("fast.wav", riff(1, 1, 2**31 - 1, 16, loud_pcm16(16000)), "implausible_header", "ingest.max_sample_rate"),
    ("chans.wav", riff(1, 1000, SR, 16, loud_pcm16(20000)), "implausible_header", "ingest.max_channels"),
    # a legal-looking rate whose ratio to 16 kHz is 16000/383999: a 7.7 M-tap filter (130 MB) for 2 KB of data
    ("odd.wav", riff(1, 1, 383999, 16, loud_pcm16(1000)), "implausible_header", "ingest.max_resample_terms"),
    # a recording cut off after 0.5 s whose header still promises 2 s
    ("cut.wav", riff(1, 1, SR, 16, loud_pcm16(8000), data_size=64000), "truncated", "64000 bytes"),
])
def test_implausible_headers_are_quarantined_before_decoding(tmp_path, name, data, reason, param):
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / name).write_bytes(data)
    out = tmp_path / "out"
    summary = ingest_directory(tmp_path / "in", out, params().ingest, SR)
    got = reasons(out)
    assert list(got) == [f"../in/{name}"] and got[f"../in/{name}"].startswith(reason + ":")
    assert param in got[f"../in/{name}"]
    assert wav_frames(out) == {} and summary["n_kept"] == 0 and summary["n_quarantined"] == 1


def test_truncated_wav_is_quarantined_in_the_user_corpus_too(tmp_path):
    from gensr.corpus.user import read_user_corpus

    root = tmp_path / "corpus"
    root.mkdir()
    (root / "cut.wav").write_bytes(riff(1, 1, SR, 16, loud_pcm16(16000), data_size=64000))
    sf.write(str(root / "ok.wav"), speechlike(1.0), SR)
    (root / "m.csv").write_text("path,text,speaker\ncut.wav,a b,s\nok.wav,c d,s\n")
    rows, quarantined = read_user_corpus(root, root / "m.csv", tmp_path / "out", params().ingest, SR)
    assert [r["utt_id"] for r in rows] == ["ok"]
    assert [(Path(p).name, r.split(":")[0]) for p, r in quarantined] == [("cut.wav", "truncated")]


def test_limits_are_params():
    p = params("ingest.min_sample_rate=1", "ingest.max_channels=2000")
    assert (p.ingest.min_sample_rate, p.ingest.max_channels) == (1, 2000)
    from gensr.config import ConfigError

    with pytest.raises(ConfigError, match="max_sample_rate"):
        params("ingest.max_sample_rate=100")


@pytest.fixture(scope="module")
def long_file(tmp_path_factory):
    """Two minutes of stereo 48 kHz PCM_16 (23 MB): 184 MB as the float64 a whole-file resampling holds."""
    folder = tmp_path_factory.mktemp("long") / "in"
    folder.mkdir()
    with sf.SoundFile(str(folder / "long.wav"), "w", 48000, 2, subtype="PCM_16") as f:
        for i in range(12):
            f.write(speechlike(10.0, 48000, 2, seed=i))
    return folder


@pytest.mark.parametrize("long_files", ["split", "reject"])
def test_a_long_file_is_read_in_bounded_memory(long_file, tmp_path, long_files):
    p = params("ingest.max_seconds=3.0", f"ingest.long_files={long_files}")
    tracemalloc.start()
    try:
        ingest_directory(long_file, tmp_path / "out", p.ingest, SR)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 16 * MB, f"peak {peak / MB:.1f} MB"
    frames = wav_frames(tmp_path / "out")
    if long_files == "split":
        assert len(frames) == 40 and sum(frames.values()) == 120 * SR and max(frames.values()) <= 3 * SR
    else:
        (reason,) = reasons(tmp_path / "out").values()
        assert frames == {} and reason.startswith("too_long: 120.00 s")


def test_streamed_parts_equal_the_whole_file_reading(tmp_path):
    """Valid input is unchanged: block-wise decoding + resampling gives load_audio's samples, byte for byte."""
    from gensr.corpus.admit import BLOCK_SAMPLES

    (tmp_path / "in").mkdir()
    seconds = 2.5 * BLOCK_SAMPLES / 44100 / 3  # several blocks of 3 channels
    sf.write(str(tmp_path / "in" / "take.flac"), speechlike(seconds, 44100, 3), 44100, subtype="PCM_24")
    ingest_directory(tmp_path / "in", tmp_path / "out", params("ingest.max_seconds=1.5").ingest, SR)
    whole = load_audio(tmp_path / "in" / "take.flac", SR)
    parts = [read_wav(p)[0] for p in sorted((tmp_path / "out").glob("take_part*.wav"))]
    assert len(parts) == math.ceil(whole.size / (1.5 * SR))
    assert np.concatenate(parts).tobytes() == whole.tobytes()


@pytest.mark.parametrize("sr_in", [8000, 22050, 44100, 48000, 11025, 96000, 16000])
def test_stream_resampler_equals_whole_signal_resampling(sr_in):
    from gensr.audio.stream import resample_blocks

    x = np.random.default_rng(sr_in).standard_normal(30011).astype(np.float32)
    x[:5000] = 0.0
    whole = resample(x, sr_in, SR)
    for block in (1000, 4097, 30011):
        streamed = list(resample_blocks((x[i : i + block] for i in range(0, x.size, block)), sr_in, SR))
        assert np.concatenate(streamed).tobytes() == whole.tobytes(), block


# ------------------------------------------------------------------ 2. nothing silently dropped


def test_every_folder_entry_gets_an_outcome(tmp_path):
    root = tmp_path / "in"
    (root / "sub").mkdir(parents=True)
    (root / "elsewhere").mkdir()
    sf.write(str(root / "ok.wav"), speechlike(1.0), SR)
    sf.write(str(root / "elsewhere" / "real.wav"), speechlike(1.0, seed=1), SR)
    os.symlink("loop_b.wav", root / "loop_a.wav")
    os.symlink("loop_a.wav", root / "loop_b.wav")
    os.symlink("nowhere.wav", root / "dangling.wav")
    os.symlink("ok.wav", root / "alias.wav")  # a link to a file is read, as before
    os.symlink("..", root / "sub" / "up")  # a folder loop
    os.mkfifo(root / "pipe.wav")  # opening it would block for ever
    (root / ".hidden.wav").write_bytes(b"x")
    (root / ".git").mkdir()
    (root / ".git" / "HEAD").write_text("ref")
    out = tmp_path / "out"

    result = cli("ingest", str(root), "--out", str(out), "-p", str(PARAMS))
    assert result.returncode == 0, result.stderr
    got = {p.removeprefix("../in/"): r.split(":")[0] for p, r in reasons(out).items()}
    assert got == {"loop_a.wav": "symlink_loop", "loop_b.wav": "symlink_loop", "dangling.wav": "dangling_link",
                   "sub/up": "link_to_folder", "pipe.wav": "not_a_regular_file", ".hidden.wav": "hidden",
                   ".git": "hidden"}
    assert sorted(wav_frames(out)) == ["alias.wav", "elsewhere/real.wav", "ok.wav"]
    assert "10 files: kept 3" in result.stdout and "quarantined 7" in result.stdout


PR_CAPBSET_DROP, CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH = 24, 1, 2  # <linux/prctl.h>, <linux/capability.h>


def _without_dac_override() -> None:
    """preexec_fn: drop the two capabilities that let root read any folder from the bounding set, so the exec'd
    child (still uid 0, so it reaches root's 0700 interpreter and tmp_path) gets the folder's mode bits applied."""
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    for cap in (CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH):
        if libc.prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP)")


def test_unreadable_folder_is_quarantined(tmp_path):
    """A folder the ingesting process may not list is a quarantine row, not a silent gap. The ingest runs in a
    child; as root (CI) that child has lost CAP_DAC_OVERRIDE/CAP_DAC_READ_SEARCH, so the PermissionError is the
    kernel's. (Dropping to nobody is no option here: the interpreter lives under root's 0700 home.) Skipped only
    if the capabilities cannot be dropped, or the child can still list the folder."""
    root, out = tmp_path / "in", tmp_path / "out"
    (root / "locked").mkdir(parents=True)
    sf.write(str(root / "locked" / "x.wav"), speechlike(1.0), SR)
    sf.write(str(root / "ok.wav"), speechlike(1.0), SR)
    code = ("import os, sys; from pathlib import Path\n"
            "try:\n    os.listdir(sys.argv[1] + '/locked'); sys.exit(3)\nexcept PermissionError: pass\n"
            "from gensr.config import load_params; from gensr.corpus.ingest import ingest_directory\n"
            f"ingest_directory(Path(sys.argv[1]), Path(sys.argv[2]), load_params(Path({str(PARAMS)!r})).ingest, {SR})")
    os.chmod(root / "locked", 0)
    try:
        result = subprocess.run([sys.executable, "-c", code, str(root), str(out)], capture_output=True, text=True,
                                timeout=600, preexec_fn=_without_dac_override if os.geteuid() == 0 else None)
    except subprocess.SubprocessError as err:  # the preexec_fn failed: no CAP_SETPCAP to drop capabilities with
        pytest.skip(f"running as root and cannot drop CAP_DAC_OVERRIDE: {err}")
    finally:
        os.chmod(root / "locked", 0o755)
    if result.returncode == 3:
        pytest.skip("the child can still list a folder of mode 000, so no folder is unreadable here")
    assert result.returncode == 0, result.stderr[-2000:]
    got = reasons(out)
    assert got["../in/locked"].startswith("unreadable_folder") and "Permission denied" in got["../in/locked"], got
    assert sorted(wav_frames(out)) == ["ok.wav"]


def test_invalid_requests_exit_2_with_one_line(tmp_path):
    (tmp_path / "in").mkdir()
    sf.write(str(tmp_path / "in" / "ok.wav"), speechlike(1.0), SR)
    same = cli("ingest", str(tmp_path / "in"), "--out", str(tmp_path / "in"), "-p", str(PARAMS))
    assert same.returncode == 2 and len(error_lines(same)) == 1 and "--out" in same.stderr
    assert sorted(p.name for p in (tmp_path / "in").iterdir()) == ["ok.wav"]  # nothing written
    bad_param = cli("ingest", str(tmp_path / "in"), "--out", str(tmp_path / "o"), "-p", str(PARAMS),
                    "-S", "ingest.max_channels=0")
    assert bad_param.returncode == 2 and "ingest.max_channels" in bad_param.stderr and "Traceback" not in bad_param.stderr


# ------------------------------------------------------------------ 4. no stale outputs after a change


def test_reruns_after_changes_leave_no_stale_output(tmp_path):
    root, out = tmp_path / "in", tmp_path / "out"
    root.mkdir()
    sf.write(str(root / "long.wav"), speechlike(7.0), SR)
    sf.write(str(root / "gone.wav"), speechlike(1.0, seed=1), SR)
    sf.write(str(root / "edit.wav"), speechlike(1.0, seed=2), SR)

    first = ingest_directory(root, out, params("ingest.max_seconds=3").ingest, SR)
    assert sorted(wav_frames(out)) == ["edit.wav", "gone.wav", "long_part000.wav", "long_part001.wav",
                                       "long_part002.wav"] and first["n_written"] == 3
    again = ingest_directory(root, out, params("ingest.max_seconds=3").ingest, SR)
    assert (again["n_reused"], again["n_written"]) == (3, 0)

    ingest_directory(root, out, params("ingest.max_seconds=10").ingest, SR)  # before: 14 s of "long" audio
    assert wav_frames(out) == {"edit.wav": SR, "gone.wav": SR, "long.wav": 7 * SR}

    ingest_directory(root, out, params("ingest.max_seconds=3", "ingest.long_files=reject").ingest, SR)
    assert sorted(wav_frames(out)) == ["edit.wav", "gone.wav"]
    assert reasons(out)["../in/long.wav"].startswith("too_long")

    (root / "gone.wav").unlink()
    sf.write(str(root / "edit.wav"), speechlike(2.0, seed=3), SR)  # same name, new take
    last = ingest_directory(root, out, params("ingest.max_seconds=3", "ingest.long_files=reject").ingest, SR)
    assert wav_frames(out) == {"edit.wav": 2 * SR} and (last["n_written"], last["n_reused"]) == (1, 0)
    assert read_wav(out / "edit.wav")[0].tobytes() == load_audio(root / "edit.wav", SR).tobytes()
    ledger = [json.loads(line) for line in (out / LEDGER_FILE).read_text().splitlines()]
    assert [(e["source"], e["outputs"]) for e in ledger] == [("edit.wav", ["edit.wav"])]


def test_a_killed_rerun_resumes_to_exactly_a_fresh_run(tmp_path, monkeypatch):
    from gensr.corpus import ingest as ingest_module

    root = tmp_path / "in"
    root.mkdir()
    for i in range(3):
        sf.write(str(root / f"take{i}.wav"), speechlike(7.0, seed=i), SR)
    ingest_directory(root, tmp_path / "out", params("ingest.max_seconds=3").ingest, SR)

    real, written = ingest_module.write_wav, []

    def killed_on_the_fourth_write(path, audio, sr):
        if len(written) == 3:
            raise KeyboardInterrupt("killed")
        written.append(path)
        return real(path, audio, sr)

    monkeypatch.setattr(ingest_module, "write_wav", killed_on_the_fourth_write)
    with pytest.raises(KeyboardInterrupt):
        ingest_directory(root, tmp_path / "out", params("ingest.max_seconds=2").ingest, SR)
    assert not (tmp_path / "out" / "quarantine.parquet").exists()  # no summary of a run that did not finish
    monkeypatch.setattr(ingest_module, "write_wav", real)
    ingest_directory(root, tmp_path / "out", params("ingest.max_seconds=2").ingest, SR)
    ingest_directory(root, tmp_path / "fresh", params("ingest.max_seconds=2").ingest, SR)

    assert _tree(tmp_path / "out") == _tree(tmp_path / "fresh")
    assert len(wav_frames(tmp_path / "out")) == 12  # 4 parts of 1.75 s each, no part of the 3 s split left


def test_a_folder_made_by_the_previous_version_is_cleaned(tmp_path):
    root, out = tmp_path / "in", tmp_path / "out"
    root.mkdir()
    sf.write(str(root / "long.wav"), speechlike(5.0), SR)
    for i in range(4):  # what the old version left: parts of an older max_seconds and its settings file
        write_wav(out / f"long_part{i:03d}.wav", speechlike(1.25, seed=i), SR)
    write_json({"ingest": {}, "sample_rate": SR}, out / ".ingest_settings.json")
    ingest_directory(root, out, params("ingest.max_seconds=10").ingest, SR)
    assert wav_frames(out) == {"long.wav": 5 * SR} and not (out / ".ingest_settings.json").exists()


# ------------------------------------------------------------------ 6. ids and paths contained on write


def test_non_ascii_names_get_stable_non_empty_ids(tmp_path):
    from gensr.corpus.user import read_user_corpus, utt_id_for

    root = tmp_path / "corpus"
    root.mkdir()
    names = ["日本語.wav", "中文.wav", "ok.wav"]
    for i, name in enumerate(names):
        sf.write(str(root / name), speechlike(1.0, seed=i), SR)
    (root / "m.csv").write_text("path,text,speaker\n" + "".join(f"{n},t {i},s\n" for i, n in enumerate(names)),
                                encoding="utf-8")
    rows, quarantined = read_user_corpus(root, root / "m.csv", tmp_path / "out", params().ingest, SR)
    ids = [r["utt_id"] for r in rows]
    assert quarantined == [] and len(set(ids)) == 3 and all(ids)
    assert ids[:2] == [utt_id_for("日本語.wav"), utt_id_for("中文.wav")] and ids[0].startswith("utt_")
    assert sorted(p.name for p in (tmp_path / "out" / "wav").iterdir()) == sorted(f"{i}.wav" for i in ids)


def _clean_corpus(root: Path, ids: list) -> Path:
    rows = []
    for k, utt in enumerate(ids):
        rel = f"wav/c{k:03d}.wav"
        write_wav(root / rel, speechlike(1.0, seed=k), SR)
        rows.append({"utt_id": utt, "path": rel, "text": "t", "speaker": f"s{k % 2}", "split": "train",
                     "duration_s": 1.0, "sample_rate": SR})
    write_parquet(pa.Table.from_pylist(rows, schema=pa.schema(
        [("utt_id", pa.string()), ("path", pa.string()), ("text", pa.string()), ("speaker", pa.string()),
         ("split", pa.string()), ("duration_s", pa.float64()), ("sample_rate", pa.int64())])), root / "manifest.parquet")
    return root


CHEAP = ["degrade.workers=1", "degrade.order=[noise, clipping]", "degrade.noise.kinds=[white]"]


def test_degrade_never_writes_outside_out_for_a_hostile_utt_id(tmp_path):
    bad = ["../../escaped", "sub/dir", "", ".hidden", None, "dup", "dup"]
    clean = _clean_corpus(tmp_path / "a" / "b" / "clean", bad + ["ok1", "ok2", "ok3", "ok4"])
    out = tmp_path / "a" / "b" / "out"
    result = cli("degrade", "--clean", str(clean), "--out", str(out), "-p", str(PARAMS), *[a for o in CHEAP for a in ("-S", o)])
    assert result.returncode == 0, result.stderr
    assert files_outside(tmp_path, clean, out) == []
    assert sorted(p.name for p in (out / "wav").iterdir()) == [f"ok{i}__d0.wav" for i in range(1, 5)]
    quarantine = pq.read_table(out / "quarantine.parquet").to_pylist()
    assert len(quarantine) == len(bad) and all(q["reason"].startswith("bad_utt_id: utt_id") for q in quarantine)
    assert sorted(q["path"] for q in quarantine) == [f"../clean/wav/c{k:03d}.wav" for k in range(len(bad))]
    assert pq.read_table(out / "manifest.parquet").column("utt_id").to_pylist() == ["ok1", "ok2", "ok3", "ok4"]
    # the run summary goes outside --out only where --summary names it (dvc.yaml: data/degraded.json)
    summary = tmp_path / "a" / "b" / "out.json"
    result = cli("degrade", "--clean", str(clean), "--out", str(out), "--summary", str(summary), "-p", str(PARAMS),
                 *[a for o in CHEAP for a in ("-S", o)])
    assert result.returncode == 0, result.stderr
    assert files_outside(tmp_path, clean, out) == ["a/b/out.json"]
    written = json.loads(summary.read_text())
    assert written["n_degraded"] == 4 and written["seconds"] > 0


def test_degrade_removes_folders_an_old_run_left_in_wav(tmp_path):
    from gensr.stages.degrade import build_degraded_corpus

    clean = _clean_corpus(tmp_path / "clean", ["u1", "u2", "u3", "u4"])
    write_wav(tmp_path / "out" / "wav" / "sub" / "dir__d0.wav", speechlike(1.0), SR)  # before: IsADirectoryError
    build_degraded_corpus(params(*CHEAP), clean, tmp_path / "out", progress=False)
    assert sorted(p.name for p in (tmp_path / "out" / "wav").iterdir()) == [f"u{i}__d0.wav" for i in range(1, 5)]


def _tree(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _kill_on_the_second_shard(monkeypatch, stage):
    """Make `stage.degrade_shard` raise KeyboardInterrupt on its second call (a kill mid-run); returns the real one."""
    real, calls = stage.degrade_shard, []

    def killed_on_the_second_shard(*args):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt("killed")
        return real(*args)

    monkeypatch.setattr(stage, "degrade_shard", killed_on_the_second_shard)
    return real


def test_degrade_killed_with_changed_params_leaves_no_manifest_of_other_audio(tmp_path, monkeypatch):
    from gensr.stages import degrade as stage

    clean = _clean_corpus(tmp_path / "clean", [f"u{i}" for i in range(6)])
    small = [*CHEAP, "degrade.shard_size=2"]
    stage.build_degraded_corpus(params(*small), clean, tmp_path / "out", progress=False)
    real = _kill_on_the_second_shard(monkeypatch, stage)
    with pytest.raises(KeyboardInterrupt):
        stage.build_degraded_corpus(params(*small, "seed=99"), clean, tmp_path / "out", progress=False)
    # two clips already hold seed-99 audio: before, the seed-1234 manifest still described them
    assert not (tmp_path / "out" / "manifest.parquet").exists()
    monkeypatch.setattr(stage, "degrade_shard", real)
    stage.build_degraded_corpus(params(*small, "seed=99"), clean, tmp_path / "out", progress=False)
    stage.build_degraded_corpus(params(*small, "seed=99"), clean, tmp_path / "fresh", progress=False)
    assert _tree(tmp_path / "out") == _tree(tmp_path / "fresh")


def test_degrade_resume_notices_a_changed_clean_file(tmp_path, monkeypatch):
    from gensr.stages import degrade as stage

    clean = _clean_corpus(tmp_path / "clean", [f"u{i}" for i in range(6)])
    small = [*CHEAP, "degrade.shard_size=2"]
    real = _kill_on_the_second_shard(monkeypatch, stage)
    with pytest.raises(KeyboardInterrupt):
        stage.build_degraded_corpus(params(*small), clean, tmp_path / "out", progress=False)
    write_wav(clean / "wav" / "c000.wav", speechlike(1.0, seed=77), SR)  # a new take; the manifest is unchanged
    monkeypatch.setattr(stage, "degrade_shard", real)
    stage.build_degraded_corpus(params(*small), clean, tmp_path / "out", progress=False)
    stage.build_degraded_corpus(params(*small), clean, tmp_path / "fresh", progress=False)
    assert _tree(tmp_path / "out") == _tree(tmp_path / "fresh")


def _pair_table(data: Path, chosen_ids: list[str]) -> Path:
    from gensr.preference.pairs import pair_table_to_arrow
    from gensr.preference.rules import MetricRule
    from gensr.preference.stats import pair_stats
    from gensr.storage import file_sha256

    src = data / "pairs" / "mgm" / "multi"
    rows = []
    for k, cid in enumerate(chosen_ids):
        paths = {kind: f"../../../{kind}/{kind[0]}{k}.wav" for kind in ("chosen", "rejected", "degraded", "clean")}
        for i, rel in enumerate(paths.values()):
            write_wav(src / rel, speechlike(0.2, seed=10 * k + i), SR)
        rows.append({"pair_id": f"p{k}", "paradigm": "mgm", "strategy": "multi", "deg_id": f"d{k}", "utt_id": f"u{k}",
                     "split": "train", "role": "train", "rank": 0, "chosen_id": cid, "rejected_id": f"r{k}",
                     **{f"{kind}_path": rel for kind, rel in paths.items()}, "chosen_codes_path": None,
                     "rejected_codes_path": None, "text": "t", "speaker": "s", "seed": k, "margin_norm": 1.0,
                     "chosen_pesq": 3.0, "rejected_pesq": 2.0})
    write_parquet(pair_table_to_arrow(pd.DataFrame(rows)), src / "pairs.parquet")
    stats = pair_stats(pd.DataFrame(rows), len(rows), [MetricRule("pesq", True)])
    stats.update(margins={"pesq": 0.0}, max_pairs_per_clip=1, pairs_sha256=file_sha256(src / "pairs.parquet"))
    write_json(stats, src / "stats.json")
    return src


@pytest.mark.parametrize("bad_id", ["../../../../evil", "a/b", ".hidden", ""])
def test_pairs_export_refuses_an_id_that_is_no_file_name(tmp_path, bad_id):
    data, out = tmp_path / "a" / "b" / "data", tmp_path / "a" / "b" / "export"
    _pair_table(data, ["c0", bad_id, "c2"])
    result = cli("pairs-export", "--paradigm", "mgm", "--out", str(out), "-p", str(PARAMS), "-S", f"paths.data={data}")
    assert result.returncode == 2 and len(error_lines(result)) == 1, result.stderr
    assert "pairs.parquet" in result.stderr and "pair p1" in result.stderr and "chosen_id" in result.stderr
    assert files_outside(tmp_path, data) == []  # nothing written at all, inside --out or out of it


def test_pairs_export_rerun_leaves_no_stale_file(tmp_path, monkeypatch):
    from gensr.preference import export as export_module
    from gensr.preference.pairs import pair_table_to_arrow
    from gensr.stages.pairs import export_pairs

    data, out = tmp_path / "data", tmp_path / "export"
    src = _pair_table(data, ["c0", "c1", "c2"])
    cfg = params(f"paths.data={data}")
    assert export_pairs(cfg, "mgm", "multi", out)["files_copied"] == 12
    write_wav(src / "../../../chosen/c0.wav", speechlike(0.2, seed=99), SR)  # resampled: new audio, same id
    write_parquet(pair_table_to_arrow(pd.read_parquet(src / "pairs.parquet").iloc[:1]), src / "pairs.parquet")

    real = export_module._copy

    def killed(*args):
        raise KeyboardInterrupt("killed")

    monkeypatch.setattr(export_module, "_copy", killed)
    with pytest.raises(KeyboardInterrupt):
        export_pairs(cfg, "mgm", "multi", out)
    assert not (out / "pairs.parquet").exists()  # the old table never describes a half-updated folder
    monkeypatch.setattr(export_module, "_copy", real)
    summary = export_pairs(cfg, "mgm", "multi", out)
    assert summary == {"out_dir": str(out), "n_pairs": 1, "files_copied": 1}
    assert (out / "audio/chosen/c0.wav").read_bytes() == (src / "../../../chosen/c0.wav").read_bytes()
    assert sorted(p.relative_to(out).as_posix() for p in (out / "audio").rglob("*.wav")) == [
        "audio/chosen/c0.wav", "audio/clean/u0.wav", "audio/degraded/d0.wav", "audio/rejected/r0.wav"]
    assert len(pd.read_parquet(out / "pairs.parquet")) == 1


# ------------------------------------------------------------------ 7. outputs readable as the umask says


@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_outputs_follow_the_umask(tmp_path, umask, mode):
    (tmp_path / "in").mkdir()
    sf.write(str(tmp_path / "in" / "ok.wav"), speechlike(1.0), SR)
    old = os.umask(umask)
    try:
        ingest_directory(tmp_path / "in", tmp_path / "out", params().ingest, SR)
        write_json({"a": 1}, tmp_path / "x.json")
    finally:
        os.umask(old)
    made = [tmp_path / "out" / n for n in ("ok.wav", "quarantine.parquet", LEDGER_FILE)] + [tmp_path / "x.json"]
    assert {p.name: oct(stat.S_IMODE(p.stat().st_mode)) for p in made} == {p.name: oct(mode) for p in made}


# ------------------------------------------------------------------ property: random bytes and random headers


def _wav_headers():
    payload = st.binary(max_size=4096)
    return st.builds(
        lambda tag, ch, rate, bits, align, size, body: riff(tag, ch, rate, bits, body, size(len(body)), align),
        st.sampled_from([1, 3, 6, 7, 2, 0x11, 0x31, 0x55, 0xFFFE]) | st.integers(0, 0xFFFF),
        st.sampled_from([1, 2, 6]) | st.integers(0, 0xFFFF),
        st.sampled_from([1, 8000, 16000, 44100]) | st.integers(0, 0xFFFFFFFF),
        st.sampled_from([8, 16, 24, 32, 64]) | st.integers(0, 0xFFFF),
        st.none() | st.integers(0, 0xFFFF),
        st.sampled_from([lambda n: n, lambda n: 0, lambda n: 0xFFFFFFFF, lambda n: 4 * n + 2]),
        payload,
    )


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.binary(max_size=4096) | _wav_headers(), suffix=st.sampled_from([".wav", ".flac", ".ogg", ".mp3"]))
def test_random_bytes_and_headers_never_raise_nor_overflow(data, suffix):
    p = params()
    with tempfile.TemporaryDirectory() as tmp:
        root, out = Path(tmp) / "in", Path(tmp) / "out"
        root.mkdir()
        (root / f"x{suffix}").write_bytes(data)
        tracemalloc.start()
        try:
            summary = ingest_directory(root, out, p.ingest, SR)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert summary["n_kept"] + summary["n_quarantined"] == 1
        written = sum(wav_frames(out).values())
        # at most max_decoded_ratio x the bytes as 16-bit mono PCM, upsampled from the lowest plausible rate
        bound = p.ingest.max_decoded_ratio * len(data) / 2 * SR / p.ingest.min_sample_rate + 1
        assert written <= bound
        assert peak < 32 * MB, f"peak {peak / MB:.1f} MB for {len(data)} bytes"
        assert summary["n_kept"] == 0 or written > 0


# --- degrade's user noise and RIR folders: read as ingest reads a file --------------------------------------------
def _hostile_noise_folder(root: Path) -> Path:
    root.mkdir(parents=True)
    sf.write(str(root / "good.wav"), speechlike(1.0, seed=3), SR)
    sf.write(str(root / "good44k.wav"), speechlike(0.5, sr=44100, channels=2, seed=4), 44100)
    (root / "one_hz.wav").write_bytes(riff(1, 1, 1, 16, loud_pcm16(4000)))  # 8 KB "lasting" 4000 s
    (root / "cut.wav").write_bytes(riff(1, 1, SR, 16, loud_pcm16(16000), data_size=64000))  # promises 2 s, holds 1
    (root / "many_channels.wav").write_bytes(riff(1, 1000, SR, 16, loud_pcm16(16000), block_align=2000))
    sf.write(str(root / "long.wav"), speechlike(30.0, seed=5), SR)  # over ingest.max_seconds (20 s)
    (root / "junk.wav").write_bytes(b"\x00not audio" * 100)
    return root


def test_degrade_noise_folder_checks_headers_and_reads_in_bounded_blocks(tmp_path):
    from gensr.corpus.degrade import AudioFolder

    root = _hostile_noise_folder(tmp_path / "noise")
    ingest = params().ingest
    tracemalloc.start()
    try:
        folder = AudioFolder(root, SR, "degrade.noise.user_dir", ingest)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert folder.files == ["good.wav", "good44k.wav"]
    got = {Path(p).name: r for p, r in folder.rejected}
    assert got["one_hz.wav"].startswith("implausible_header") and "ingest.min_sample_rate" in got["one_hz.wav"]
    assert got["cut.wav"].startswith("truncated")
    assert got["many_channels.wav"].startswith("implausible_header") and "ingest.max_channels" in got["many_channels.wav"]
    assert got["long.wav"].startswith("too_long") and "ingest.max_seconds" in got["long.wav"]
    assert got["junk.wav"].startswith("unreadable")
    # the 30 s file is 1.9 MB as float32 and decoding stops at 20 s: well under its whole plus a 1 MB block
    assert peak < 8 * MB, peak
    # what is kept is load_audio's signal, sample for sample (mix-down and resampling done block-wise)
    for name in folder.files:
        assert np.array_equal(folder.load(name), load_audio(root / name, SR, min_seconds=0.0, silence_dbfs=None))


def test_degrade_quarantines_hostile_noise_and_rir_files_with_their_reason(tmp_path):
    from gensr.stages.degrade import build_degraded_corpus

    clean = _clean_corpus(tmp_path / "clean", ["u1", "u2", "u3", "u4"])
    noise = _hostile_noise_folder(tmp_path / "noise")
    rirs = tmp_path / "rirs"
    rirs.mkdir()
    rir = np.zeros(1600, np.float32)
    rir[40], rir[41:] = 1.0, 0.05 * np.exp(-np.arange(1559) / 200.0)
    sf.write(str(rirs / "room.wav"), rir, SR)
    (rirs / "one_hz.wav").write_bytes(riff(1, 1, 1, 16, loud_pcm16(4000)))
    (rirs / "cut.wav").write_bytes(riff(1, 1, SR, 16, loud_pcm16(800), data_size=64000))
    out = tmp_path / "out"
    s = build_degraded_corpus(params("degrade.workers=1", "degrade.order=[noise, reverb]", "degrade.noise.kinds=[user]",
                                     f"degrade.noise.user_dir={noise}", "degrade.noise.prob=1.0",
                                     f"degrade.reverb.user_rir_dir={rirs}", "degrade.reverb.prob=1.0"),
                              clean, out, progress=False)
    assert s["n_degraded"] == 4
    got = reasons(out)
    noise_rows = {Path(p).name: r for p, r in got.items() if Path(p).parent.name == "noise"}
    rir_rows = {Path(p).name: r for p, r in got.items() if Path(p).parent.name == "rirs"}
    assert len(got) == len(noise_rows) + len(rir_rows), got
    assert set(noise_rows) == {"one_hz.wav", "cut.wav", "many_channels.wav", "long.wav", "junk.wav"}, noise_rows
    assert set(rir_rows) == {"one_hz.wav", "cut.wav"}, rir_rows
    assert noise_rows["one_hz.wav"].startswith("degrade.noise.user_dir: implausible_header")
    assert noise_rows["long.wav"].startswith("degrade.noise.user_dir: too_long")
    assert rir_rows["one_hz.wav"].startswith("degrade.reverb.user_rir_dir: implausible_header")
    assert rir_rows["cut.wav"].startswith("degrade.reverb.user_rir_dir: truncated")
    applied = [json.loads(d) for d in pd.read_parquet(out / "manifest.parquet")["degradations"]]
    used = {step["file"] for steps in applied for step in steps if "file" in step}
    assert used and used <= {"good.wav", "good44k.wav", "room.wav"}, used


# --- compressed files: the encoder's frame count is checked against what decodes -----------------------------------
@pytest.mark.parametrize("rate, channels", [(16000, 1), (44100, 2), (8000, 1), (48000, 1)])
def test_valid_mp3_and_ogg_files_are_admitted_whole(tmp_path, rate, channels):
    from gensr.corpus.admit import admit

    for fmt, subtype, ext in (("MP3", "MPEG_LAYER_III", "mp3"), ("OGG", "VORBIS", "ogg"), ("OGG", "OPUS", "opus")):
        if ext == "opus" and rate not in (8000, 16000, 48000):
            continue
        path = tmp_path / f"ok_{rate}.{ext}"
        sf.write(str(path), speechlike(3.3, sr=rate, channels=channels), rate, format=fmt, subtype=subtype)
        got = admit(path, params().ingest, SR)
        assert abs(got.n_samples / SR - 3.3) < 0.1, (ext, got.n_samples)


@pytest.mark.parametrize("keep", [0.5, 0.9])
def test_an_mp3_cut_short_of_its_xing_count_is_flagged_truncated(tmp_path, keep):
    from gensr.audio.io import AudioRejected
    from gensr.corpus.admit import admit, inspect_header

    whole = tmp_path / "whole.mp3"
    sf.write(str(whole), speechlike(5.0), SR, format="MP3", subtype="MPEG_LAYER_III")
    cut = tmp_path / "cut.mp3"
    cut.write_bytes(whole.read_bytes()[: int(whole.stat().st_size * keep)])
    assert inspect_header(cut, params().ingest, SR).frames == 5 * SR  # the header still claims the whole 5 s
    with pytest.raises(AudioRejected, match=r"truncated: the encoder's count promises 80000 frames"):
        admit(cut, params().ingest, SR)
    (tmp_path / "in").mkdir()
    cut.rename(tmp_path / "in" / "cut.mp3")
    ingest_directory(tmp_path / "in", tmp_path / "out", params().ingest, SR)
    assert reasons(tmp_path / "out")["../in/cut.mp3"].startswith("truncated")
    assert wav_frames(tmp_path / "out") == {}
