"""Admitting one user file: its header is checked before a sample is decoded, and it is decoded
in blocks, so neither a lying header nor a long recording can exhaust memory or disk.

`admit(path, ingest, sample_rate)` returns an `Admitted` (the file's length, its parts, and a way
to stream them) or raises AudioRejected with a stable reason code:

    missing, not_a_regular_file, empty_file, unreadable   the file cannot be opened as audio
    implausible_header   sample rate, its ratio to sample_rate, or channel count outside the ingest.*
                         limits, or more frames than the file's bytes can hold
    truncated            the header (or a compressed file's encoder count: Ogg granule, MP3 Xing/Info/VBRI)
                         promises more audio than the file holds
    implausible_size     the data decodes to more than ingest.max_decoded_ratio allows
    no_samples, non_finite, silent, too_short, too_long   as gensr.audio.io.load_audio / ingest

The audio equals load_audio's (mix-down, then audio.io.resample) byte for byte: it is the same
computation done block by block (gensr.audio.stream).
"""

from __future__ import annotations

import math
import os
import stat
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
import soundfile as sf

from gensr.audio.io import AudioRejected
from gensr.audio.stream import resample_blocks
from gensr.config.corpus import IngestParams

BLOCK_SAMPLES = 1 << 18  # samples (frames x channels) decoded at a time: 1 MB of float32
# Bytes per sample of the uncompressed subtypes, in containers that store samples as they are
# (FLAC also reports PCM_16, but compresses): their frame count is exact and must fit the file.
UNCOMPRESSED_BYTES = {"PCM_S8": 1, "PCM_U8": 1, "PCM_16": 2, "PCM_24": 3, "PCM_32": 4, "FLOAT": 4, "DOUBLE": 8,
                      "ULAW": 1, "ALAW": 1}
RAW_CONTAINERS = {"WAV", "WAVEX", "RF64", "W64", "AIFF", "AU", "RAW", "CAF", "IRCAM", "NIST", "SVX", "PAF", "VOC",
                  "MAT4", "MAT5", "HTK", "SD2", "PVF"}
UNKNOWN_LENGTH = 1 << 62  # libsndfile reports an unknown length (a streamed file) as about SF_COUNT_MAX
# Compressed files whose frame count libsndfile takes from the encoder, not from an estimate: an Ogg stream's
# last granule position, and an MP3's Xing/Info/VBRI header. Decoding them must give that count, give or take
# one codec frame (an MPEG-1 Layer III frame is 1152 samples, a Vorbis long block 2048): else they are cut.
# An MP3 without such a header only has a length estimated from its size and bitrate: no check but
# ingest.max_decoded_ratio is honest there.
CODEC_FRAME = {"OGG": 2048, "MP3": 1152}
MP3_LENGTH_TAGS = (b"Xing", b"Info", b"VBRI")


@dataclass(frozen=True)
class Header:
    """What a file's header says, after the plausibility checks."""

    samplerate: int
    channels: int
    frames: int | None  # None: the header does not know
    exact: bool  # frames is the exact decoded length (uncompressed PCM, FLAC): a mismatch is truncation
    size: int  # bytes on disk
    slack: int | None = None  # compressed, with an encoder's frame count: decoding may differ by this much at most


def _reject(path: Path, reason: str) -> AudioRejected:
    return AudioRejected(path, reason.replace("\n", " ")[:300])


def _riff_data_claim(path: Path, size: int) -> tuple[int, int, int] | None:
    """(bytes the RIFF/RIFX 'data' chunk claims, bytes after its header, block size), or None if not such a WAV.

    libsndfile silently shortens a data chunk that runs past the end of the file, so this is the
    only place the header's own claim can be seen. 0 and 0xFFFFFFFF mean "unknown" (a streamed
    WAV) and are not a claim; RF64 keeps the real size in its ds64 chunk.
    """
    with open(path, "rb") as f:
        head = f.read(12)
        if len(head) < 12 or head[8:12] != b"WAVE" or head[:4] not in (b"RIFF", b"RIFX", b"RF64"):
            return None
        endian = ">" if head[:4] == b"RIFX" else "<"
        ds64_data, block = None, 1
        offset = 12
        while offset + 8 <= size:
            f.seek(offset)
            chunk = f.read(8)
            chunk_id, chunk_size = chunk[:4], struct.unpack(endian + "I", chunk[4:])[0]
            if chunk_id == b"ds64":
                body = f.read(24)
                if len(body) == 24:
                    ds64_data = struct.unpack("<Q", body[8:16])[0]
            elif chunk_id == b"fmt ":
                body = f.read(14)
                if len(body) == 14:
                    block = max(1, struct.unpack(endian + "H", body[12:14])[0])
            elif chunk_id == b"data":
                if head[:4] == b"RF64" and chunk_size == 0xFFFFFFFF and ds64_data is not None:
                    chunk_size = ds64_data
                elif chunk_size in (0, 0xFFFFFFFF):
                    return None
                return chunk_size, size - offset - 8, block
            offset += 8 + chunk_size + (chunk_size & 1)
    return None


def _mp3_has_length_tag(path: Path) -> bool:
    """True if the first MPEG frame (after any ID3v2 tag) carries a Xing/Info/VBRI header, i.e. the encoder's count."""
    with open(path, "rb") as f:
        head = f.read(10)
        skip = 0
        if len(head) == 10 and head[:3] == b"ID3":
            skip = 10 + ((head[6] & 0x7F) << 21 | (head[7] & 0x7F) << 14 | (head[8] & 0x7F) << 7 | (head[9] & 0x7F))
        f.seek(skip)
        first = f.read(4096)
    sync = next((i for i in range(len(first) - 1) if first[i] == 0xFF and first[i + 1] & 0xE0 == 0xE0), None)
    return sync is not None and any(tag in first[sync:sync + 200] for tag in MP3_LENGTH_TAGS)


def inspect_header(path: str | Path, ingest: IngestParams, sample_rate: int) -> Header:
    """Read only the header and check it is plausible; raise AudioRejected if not. Opens nothing
    that is not a regular file (a FIFO would block)."""
    path = Path(path)
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise _reject(path, "missing: file does not exist") from None
    except OSError as err:
        raise _reject(path, f"unreadable: {type(err).__name__}: {err.strerror}") from None
    if not stat.S_ISREG(st.st_mode):
        raise _reject(path, "not_a_regular_file: only regular files are read")
    if st.st_size == 0:
        raise _reject(path, "empty_file: 0 bytes")
    try:
        info = sf.info(str(path))
        claim = _riff_data_claim(path, st.st_size)
    except Exception as err:  # soundfile raises several types for bad headers and non-audio
        detail = str(err).replace(str(path), path.name)
        raise _reject(path, f"unreadable: {type(err).__name__}: {detail}") from None
    rate, channels = int(info.samplerate), int(info.channels)
    if not ingest.min_sample_rate <= rate <= ingest.max_sample_rate:
        raise _reject(path, f"implausible_header: sample rate {rate} Hz is outside ingest.min_sample_rate.."
                            f"ingest.max_sample_rate ({ingest.min_sample_rate}..{ingest.max_sample_rate} Hz)")
    terms = max(rate, sample_rate) // math.gcd(rate, sample_rate)
    if rate != sample_rate and terms > ingest.max_resample_terms:
        raise _reject(path, f"implausible_header: {rate} Hz to {sample_rate} Hz reduces to a ratio with the term {terms}, "
                            f"over ingest.max_resample_terms={ingest.max_resample_terms}")
    if not 1 <= channels <= ingest.max_channels:
        raise _reject(path, f"implausible_header: {channels} channels is outside 1..ingest.max_channels "
                            f"({ingest.max_channels})")
    if claim is not None and claim[0] // claim[2] > claim[1] // claim[2]:
        promised, held, block = claim
        raise _reject(path, f"truncated: the header promises {promised // block} blocks ({promised} bytes) of audio, "
                            f"the file holds {held // block} ({held} bytes)")
    frames = int(info.frames) if 0 <= info.frames < UNKNOWN_LENGTH else None
    width = UNCOMPRESSED_BYTES.get(info.subtype) if info.format in RAW_CONTAINERS else None
    if frames is not None:
        if width is not None and frames * channels * width > st.st_size:
            raise _reject(path, f"implausible_header: {frames} frames x {channels} channels x {width} bytes "
                                f"do not fit in {st.st_size} bytes")
        if frames * channels * 2 > ingest.max_decoded_ratio * st.st_size:
            raise _reject(path, f"implausible_header: {frames} frames x {channels} channels from {st.st_size} bytes "
                                f"is more than ingest.max_decoded_ratio={ingest.max_decoded_ratio} x the file as 16-bit PCM")
    exact = frames is not None and (width is not None or info.format == "FLAC")
    slack = None
    if frames is not None and not exact and info.format in CODEC_FRAME:
        if info.format == "OGG" or _mp3_has_length_tag(path):
            slack = CODEC_FRAME[info.format]
    return Header(rate, channels, frames, exact, st.st_size, slack)


def decoded_blocks(path: Path, header: Header, ingest: IngestParams) -> Iterator[np.ndarray]:
    """The file as mono float32 blocks at its own rate (channels averaged, as load_audio does)."""
    frames_per_block = max(1, BLOCK_SAMPLES // header.channels)
    max_frames = ingest.max_decoded_ratio * header.size // (2 * header.channels)
    n = 0
    try:
        f = sf.SoundFile(str(path))
    except Exception as err:
        raise _reject(path, f"unreadable: {type(err).__name__}: {str(err).replace(str(path), path.name)}") from None
    with f:
        while True:
            try:
                data = f.read(frames_per_block, dtype="float32", always_2d=True)
            except Exception as err:  # a decoder error mid-stream
                raise _reject(path, f"unreadable: {type(err).__name__}: {str(err).replace(str(path), path.name)}") from None
            if data.shape[0] == 0:
                break
            n += data.shape[0]
            if n > max_frames:
                raise _reject(path, f"implausible_size: decodes to more than {max_frames} frames from {header.size} "
                                    f"bytes (ingest.max_decoded_ratio={ingest.max_decoded_ratio})")
            if not np.isfinite(data).all():
                raise _reject(path, "non_finite: NaN or Inf samples")
            yield data.mean(axis=1) if data.shape[1] > 1 else data[:, 0]
    if n == 0:
        raise _reject(path, "no_samples: header is valid but holds no audio")
    if header.exact and n != header.frames:
        raise _reject(path, f"truncated: the header promises {header.frames} frames, the file decodes to {n}")
    if header.slack is not None and abs(n - header.frames) > header.slack:
        what = "truncated" if n < header.frames else "implausible_header"
        raise _reject(path, f"{what}: the encoder's count promises {header.frames} frames, the file decodes to {n} "
                            f"(more than one codec frame, {header.slack}, apart)")


@dataclass
class Admitted:
    """A file that passed every check: `n_samples` at `sample_rate`, cut into `bounds` parts."""

    path: Path
    header: Header
    ingest: IngestParams
    sample_rate: int
    n_samples: int
    bounds: list[tuple[int, int]]
    whole: np.ndarray | None  # the audio, kept from the checking pass when it is one part

    def segments(self) -> Iterator[np.ndarray]:
        """The parts in order, each in memory only while it is yielded (a second decoding pass if split)."""
        if self.whole is not None:
            yield self.whole
            return
        blocks = resample_blocks(decoded_blocks(self.path, self.header, self.ingest), self.header.samplerate,
                                 self.sample_rate)
        pending: list[np.ndarray] = []
        have, index = 0, 0
        for block in blocks:
            pending.append(block)
            have += block.size
            while index < len(self.bounds) and have >= self.bounds[index][1] - self.bounds[index][0]:
                joined = np.concatenate(pending)
                size = self.bounds[index][1] - self.bounds[index][0]
                yield joined[:size]
                pending, have = [joined[size:]], joined.size - size
                index += 1
        if index != len(self.bounds) or have:
            raise RuntimeError(f"{self.path}: the file changed while it was read")


def admit(path: str | Path, ingest: IngestParams, sample_rate: int, *, allow_split: bool = True) -> Admitted:
    """Check `path` in one streaming pass; raise AudioRejected with the first reason found.

    A file longer than ingest.max_seconds is cut into equal parts no longer than the limit when
    ingest.long_files is 'split' and `allow_split` (a transcribed utterance cannot be split);
    otherwise it is rejected as soon as the limit is passed, without decoding the rest.
    """
    path = Path(path)
    header = inspect_header(path, ingest, sample_rate)
    max_len = int(ingest.max_seconds * sample_rate)
    split = ingest.long_files == "split" and allow_split
    kept: list[np.ndarray] | None = []
    n, peak = 0, 0.0
    for block in resample_blocks(decoded_blocks(path, header, ingest), header.samplerate, sample_rate):
        n += block.size
        if block.size:
            peak = max(peak, float(np.max(np.abs(block))))
        if n <= max_len:
            kept.append(block)
            continue
        kept = None
        if not split:
            fix = "set ingest.long_files: split" if allow_split else "cut it into sentences with their own transcripts"
            if header.frames is not None:
                length = f"{math.ceil(header.frames * sample_rate / header.samplerate) / sample_rate:.2f} s"
            else:
                length = f"more than {ingest.max_seconds} s"
            raise _reject(path, f"too_long: {length} > ingest.max_seconds={ingest.max_seconds} ({fix}, or raise the limit)")
    if peak <= 10 ** (ingest.silence_dbfs / 20):
        raise _reject(path, f"silent: peak below {ingest.silence_dbfs} dBFS")
    if n < ingest.min_seconds * sample_rate:
        raise _reject(path, f"too_short: {n / sample_rate:.3f} s < {ingest.min_seconds} s")
    if kept is not None:
        whole = np.concatenate([np.zeros(0, np.float32), *kept])
        return Admitted(path, header, ingest, sample_rate, n, [(0, n)], whole)
    n_parts = math.ceil(n / max_len)
    edges = np.linspace(0, n, n_parts + 1).round().astype(int)
    return Admitted(path, header, ingest, sample_rate, n, list(zip(edges[:-1].tolist(), edges[1:].tolist())), None)


def admit_audio(path: str | Path, ingest: IngestParams, sample_rate: int, *, allow_split: bool = True) -> list[np.ndarray]:
    """`admit` with the parts in memory (a transcribed utterance: one part, at most ingest.max_seconds)."""
    return list(admit(path, ingest, sample_rate, allow_split=allow_split).segments())
