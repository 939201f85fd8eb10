//! Gap audio: what the caller hears while holdfast re-routes the AI leg to a new provider —
//! low-level comfort noise, or a short configured prompt followed by comfort noise (or
//! silence) — as 20 ms G.711 frames, plus a WAV loader for the prompt file.
//!
//! Does: generate frames of [`GapAudio`] in the stream's G.711 law (PCMU, payload type 0, or
//! PCMA, payload type 8; RFC 3551 §4.5.14), one 160-byte frame (20 ms at 8 kHz) per call of
//! [`Filler::next_frame`]; comfort noise is white noise near −62 dBov from a seeded xorshift
//! generator (the seed comes in: the relay uses its stream's SSRC); [`load_wav`] reads an
//! 8 kHz mono RIFF/WAVE file (PCM16, A-law or μ-law) into linear PCM16 samples.
//!
//! Never: reads a clock, a file or a socket (the config loader reads the file, the relay
//! schedules frames by the `now` it is given), draws from a shared random source, allocates
//! per frame, or panics on any input bytes (a truncated or garbage WAV is an error).
//!
//! LIFECYCLE of one [`Filler`]: `Prompt(pos)` — frames from the prompt's samples, the last
//! partial frame padded with what follows — → `After` (comfort noise or silence, for as long
//! as the relay keeps asking). [`GapAudio::ComfortNoise`] starts in `After`.
//!
//! Why a prompt is `&'static [i16]`: [`GapAudio`] travels inside
//! [`RelayUpdate`](super::control::RelayUpdate), a `Copy` message. A prompt is loaded once
//! per configuration (re)load and [`GapAudio::prompt`] interns it (equal sample buffers
//! share one allocation), so reloading the same file never grows memory.
use std::sync::Mutex;
use std::time::Duration;

use crate::media::codec::{FRAME_SAMPLES, G711};

/// The only sample rate a prompt may have: G.711's 8 kHz (RFC 3551 §4.5.14).
pub const PROMPT_SAMPLE_RATE_HZ: u32 = 8000;

/// Peak amplitude of comfort noise in linear PCM16. Uniform noise in ±46 has an RMS of
/// 46/√3 ≈ 26.6, i.e. 20·log10(26.6 / 32768) ≈ −62 dBov: audible as "the line is alive"
/// on a quiet handset, far below speech (about −20 dBov).
const NOISE_PEAK: i32 = 46;

/// What follows a prompt until the gap ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AfterPrompt {
    /// Low-level comfort noise (as [`GapAudio::ComfortNoise`]).
    ComfortNoise,
    /// Digital silence (the law's zero code).
    Silence,
}

/// What the caller hears during an AI re-route gap.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum GapAudio {
    /// Low-level white noise (about −62 dBov) for the whole gap.
    ComfortNoise,
    /// `pcm` (8 kHz linear PCM16, see [`load_wav`]) played once from its start, then
    /// `then` for as long as the gap lasts.
    Prompt {
        /// The prompt's samples; build with [`GapAudio::prompt`].
        pcm: &'static [i16],
        /// What follows the prompt.
        then: AfterPrompt,
    },
}

impl std::fmt::Debug for GapAudio {
    // A prompt is thousands of samples: its length is what a log needs.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            GapAudio::ComfortNoise => f.write_str("ComfortNoise"),
            GapAudio::Prompt { pcm, then } => f
                .debug_struct("Prompt")
                .field("samples", &pcm.len())
                .field("duration", &prompt_duration(pcm.len()))
                .field("then", then)
                .finish(),
        }
    }
}

/// Interned prompt buffers (see the module doc): a handful per process at most.
static PROMPTS: Mutex<Vec<&'static [i16]>> = Mutex::new(Vec::new());

impl GapAudio {
    /// A prompt of 8 kHz linear PCM16 `samples` (e.g. from [`load_wav`]) followed by
    /// `then`. The samples are interned for the life of the process: calling this again
    /// with equal samples (a configuration reload) returns the same buffer.
    pub fn prompt(samples: Vec<i16>, then: AfterPrompt) -> GapAudio {
        let mut interned = PROMPTS.lock().unwrap_or_else(|e| e.into_inner());
        let pcm = match interned.iter().find(|p| ***p == samples[..]) {
            Some(p) => *p,
            None => {
                let p: &'static [i16] = Box::leak(samples.into_boxed_slice());
                interned.push(p);
                p
            }
        };
        GapAudio::Prompt { pcm, then }
    }

    /// How long the prompt plays (zero for comfort noise).
    pub fn prompt_duration(&self) -> Duration {
        match self {
            GapAudio::ComfortNoise => Duration::ZERO,
            GapAudio::Prompt { pcm, .. } => prompt_duration(pcm.len()),
        }
    }
}

/// The playing time of `samples` samples at 8 kHz.
pub fn prompt_duration(samples: usize) -> Duration {
    let samples = samples as u64;
    let rate = u64::from(PROMPT_SAMPLE_RATE_HZ);
    Duration::from_secs(samples / rate)
        + Duration::from_nanos((samples % rate) * 1_000_000_000 / rate)
}

/// The G.711 law of a static RTP payload type: 0 = PCMU (μ-law), 8 = PCMA (A-law)
/// (RFC 3551 table 4); anything else is not G.711.
pub fn law_of_payload_type(pt: u8) -> Option<G711> {
    match pt {
        0 => Some(G711::Ulaw),
        8 => Some(G711::Alaw),
        _ => None,
    }
}

/// Produces the frames of one gap: [`next_frame`](Filler::next_frame) fills 160 bytes
/// (20 ms) of G.711 in the law it was made for.
#[derive(Debug, Clone)]
pub struct Filler {
    audio: GapAudio,
    law: G711,
    /// Next prompt sample to play.
    pos: usize,
    /// xorshift64 state (never zero).
    rng: u64,
}

impl Filler {
    /// A filler for `audio` in `law`; `seed` makes the noise (any value; 0 is remapped).
    pub fn new(audio: GapAudio, law: G711, seed: u64) -> Filler {
        // splitmix64 of the seed, so nearby seeds (SSRCs) give unrelated noise, and
        // xorshift's forbidden zero state is avoided.
        let mut z = seed.wrapping_add(0x9e37_79b9_7f4a_7c15);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^= z >> 31;
        Filler {
            audio,
            law,
            pos: 0,
            rng: if z == 0 { 0x2545_f491_4f6c_dd1d } else { z },
        }
    }

    /// A filler for a stream whose last packets had RTP payload type `pt`; `None` unless
    /// `pt` is 0 (PCMU) or 8 (PCMA) — holdfast never sends a codec the peer did not get.
    pub fn for_payload_type(audio: GapAudio, pt: u8, seed: u64) -> Option<Filler> {
        law_of_payload_type(pt).map(|law| Filler::new(audio, law, seed))
    }

    /// The law frames are encoded in.
    pub fn law(&self) -> G711 {
        self.law
    }

    /// The RTP payload type of the frames (0 or 8).
    pub fn payload_type(&self) -> u8 {
        match self.law {
            G711::Ulaw => 0,
            G711::Alaw => 8,
        }
    }

    /// The audio being played.
    pub fn audio(&self) -> GapAudio {
        self.audio
    }

    /// Whether the prompt (if any) has been played to its end.
    pub fn prompt_done(&self) -> bool {
        match self.audio {
            GapAudio::ComfortNoise => true,
            GapAudio::Prompt { pcm, .. } => self.pos >= pcm.len(),
        }
    }

    /// Writes the next 20 ms frame (160 G.711 bytes) into `out[..160]` and returns 160, or
    /// 0 (writing nothing) when `out` is shorter than a frame.
    pub fn next_frame(&mut self, out: &mut [u8]) -> usize {
        let Some(frame) = out.get_mut(..FRAME_SAMPLES) else {
            return 0;
        };
        let (pcm, after) = match self.audio {
            GapAudio::ComfortNoise => (&[][..], AfterPrompt::ComfortNoise),
            GapAudio::Prompt { pcm, then } => (pcm, then),
        };
        let from_prompt = pcm.get(self.pos..).unwrap_or(&[]);
        let n = from_prompt.len().min(FRAME_SAMPLES);
        for (o, &s) in frame.iter_mut().zip(&from_prompt[..n]) {
            *o = self.law.encode(s);
        }
        self.pos += n;
        for o in &mut frame[n..] {
            *o = match after {
                AfterPrompt::ComfortNoise => {
                    let s = self.noise_sample();
                    self.law.encode(s)
                }
                AfterPrompt::Silence => self.law.silence(),
            };
        }
        FRAME_SAMPLES
    }

    /// One uniform sample in ±[`NOISE_PEAK`] (xorshift64, Marsaglia 2003).
    fn noise_sample(&mut self) -> i16 {
        let mut x = self.rng;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.rng = x;
        let span = (2 * NOISE_PEAK + 1) as u64;
        ((x >> 32) % span) as i16 - NOISE_PEAK as i16
    }
}

/// Why a WAV prompt file was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WavError {
    /// No `RIFF....WAVE` header.
    #[error("not a WAV file (no RIFF/WAVE header)")]
    NotWav,
    /// The file ends inside a header or chunk.
    #[error("truncated WAV file: it ends inside the {0}")]
    Truncated(&'static str),
    /// No `fmt ` chunk before the `data` chunk.
    #[error("WAV file has no fmt chunk before its data")]
    NoFormat,
    /// No `data` chunk.
    #[error("WAV file has no data chunk")]
    NoData,
    /// The `data` chunk holds no sample.
    #[error("WAV file has no audio samples")]
    Empty,
    /// Not 8000 Hz.
    #[error("{0} Hz; only 8000 Hz mono is supported")]
    SampleRate(u32),
    /// Not mono.
    #[error("{0} channels; only 8000 Hz mono is supported")]
    Channels(u16),
    /// An encoding other than PCM16, A-law or μ-law.
    #[error(
        "WAV format tag {format} with {bits} bits per sample; only 16-bit PCM (1), \
         8-bit A-law (6) or 8-bit μ-law (7) is supported"
    )]
    Encoding {
        /// The format tag (1 = PCM, 3 = float, 6 = A-law, 7 = μ-law, 0xFFFE = extensible's
        /// sub-format).
        format: u16,
        /// Bits per sample.
        bits: u16,
    },
}

const WAVE_FORMAT_PCM: u16 = 1;
const WAVE_FORMAT_ALAW: u16 = 6;
const WAVE_FORMAT_MULAW: u16 = 7;
const WAVE_FORMAT_EXTENSIBLE: u16 = 0xfffe;

fn le16(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_le_bytes(b.get(at..at + 2)?.try_into().ok()?))
}

fn le32(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

/// Encoding of a prompt file's samples.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum WavEncoding {
    Pcm16,
    Law(G711),
}

/// Reads an 8 kHz mono RIFF/WAVE file — 16-bit PCM (format 1), A-law (6) or μ-law (7),
/// also as WAVE_FORMAT_EXTENSIBLE — into linear PCM16 samples. Chunks other than `fmt ` and
/// `data` (LIST, fact, cue, ...) are skipped. Anything else is refused with a message
/// naming what was found; never panics, whatever the bytes.
pub fn load_wav(bytes: &[u8]) -> Result<Vec<i16>, WavError> {
    if bytes.get(0..4) != Some(b"RIFF") || bytes.get(8..12) != Some(b"WAVE") {
        return Err(
            if bytes.len() < 12 && b"RIFF".starts_with(&bytes[..bytes.len().min(4)]) {
                WavError::Truncated("RIFF header")
            } else {
                WavError::NotWav
            },
        );
    }
    let mut at = 12;
    let mut encoding = None;
    while at < bytes.len() {
        let (Some(id), Some(size)) = (bytes.get(at..at + 4), le32(bytes, at + 4)) else {
            return Err(WavError::Truncated("chunk header"));
        };
        let body_start = at + 8;
        let size = usize::try_from(size).unwrap_or(usize::MAX);
        let body = bytes.get(body_start..body_start.saturating_add(size));
        match id {
            b"fmt " => {
                let body = body.ok_or(WavError::Truncated("fmt chunk"))?;
                encoding = Some(parse_fmt(body)?);
            }
            b"data" => {
                let enc = encoding.ok_or(WavError::NoFormat)?;
                let body = body.ok_or(WavError::Truncated("data chunk"))?;
                let samples: Vec<i16> = match enc {
                    // A trailing odd byte is half a sample: not audio.
                    WavEncoding::Pcm16 => body
                        .chunks_exact(2)
                        .map(|c| i16::from_le_bytes([c[0], c[1]]))
                        .collect(),
                    WavEncoding::Law(law) => body.iter().map(|&c| law.decode(c)).collect(),
                };
                if samples.is_empty() {
                    return Err(WavError::Empty);
                }
                return Ok(samples);
            }
            _ => {}
        }
        // RIFF chunks are padded to an even size.
        at = body_start.saturating_add(size).saturating_add(size & 1);
    }
    Err(if encoding.is_some() {
        WavError::NoData
    } else {
        WavError::NoFormat
    })
}

/// The `fmt ` chunk (WAVEFORMAT / WAVEFORMATEX / WAVEFORMATEXTENSIBLE).
fn parse_fmt(b: &[u8]) -> Result<WavEncoding, WavError> {
    let t = WavError::Truncated("fmt chunk");
    let mut format = le16(b, 0).ok_or(t.clone())?;
    let channels = le16(b, 2).ok_or(t.clone())?;
    let rate = le32(b, 4).ok_or(t.clone())?;
    let bits = le16(b, 14).ok_or(t.clone())?;
    if format == WAVE_FORMAT_EXTENSIBLE {
        // cbSize (16), valid bits (18), channel mask (20), then the sub-format GUID whose
        // first two bytes are the format tag (24).
        format = le16(b, 24).ok_or(t)?;
    }
    if channels != 1 {
        return Err(WavError::Channels(channels));
    }
    if rate != PROMPT_SAMPLE_RATE_HZ {
        return Err(WavError::SampleRate(rate));
    }
    match (format, bits) {
        (WAVE_FORMAT_PCM, 16) => Ok(WavEncoding::Pcm16),
        (WAVE_FORMAT_ALAW, 8) => Ok(WavEncoding::Law(G711::Alaw)),
        (WAVE_FORMAT_MULAW, 8) => Ok(WavEncoding::Law(G711::Ulaw)),
        (format, bits) => Err(WavError::Encoding { format, bits }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A canonical WAV file; `extra` chunks go between fmt and data.
    fn wav(format: u16, channels: u16, rate: u32, bits: u16, extra: &[u8], data: &[u8]) -> Vec<u8> {
        let mut v = Vec::new();
        v.extend_from_slice(b"RIFF");
        v.extend_from_slice(&0u32.to_le_bytes()); // fixed below
        v.extend_from_slice(b"WAVE");
        v.extend_from_slice(b"fmt ");
        v.extend_from_slice(&16u32.to_le_bytes());
        v.extend_from_slice(&format.to_le_bytes());
        v.extend_from_slice(&channels.to_le_bytes());
        v.extend_from_slice(&rate.to_le_bytes());
        let block = channels * bits.div_ceil(8);
        v.extend_from_slice(&(rate * u32::from(block)).to_le_bytes());
        v.extend_from_slice(&block.to_le_bytes());
        v.extend_from_slice(&bits.to_le_bytes());
        v.extend_from_slice(extra);
        v.extend_from_slice(b"data");
        v.extend_from_slice(&(data.len() as u32).to_le_bytes());
        v.extend_from_slice(data);
        let riff = (v.len() - 8) as u32;
        v[4..8].copy_from_slice(&riff.to_le_bytes());
        v
    }

    fn pcm16_bytes(s: &[i16]) -> Vec<u8> {
        s.iter().flat_map(|x| x.to_le_bytes()).collect()
    }

    /// RMS in dBov (0 dBov = full-scale PCM16) of decoded frames.
    fn dbov(codes: &[u8], law: G711) -> f64 {
        let sum: f64 = codes
            .iter()
            .map(|&c| {
                let s = f64::from(law.decode(c));
                s * s
            })
            .sum();
        let rms = (sum / codes.len() as f64).sqrt();
        20.0 * (rms / 32768.0).log10()
    }

    #[test]
    fn pcm16_wav_loads_and_skips_list_chunk() {
        let samples: Vec<i16> = (0..400).map(|i| (i * 37 - 7000) as i16).collect();
        // An odd-sized LIST chunk, padded to even as RIFF requires.
        let mut list = b"LIST".to_vec();
        list.extend_from_slice(&5u32.to_le_bytes());
        list.extend_from_slice(b"INFOx\0");
        let f = wav(1, 1, 8000, 16, &list, &pcm16_bytes(&samples));
        assert_eq!(load_wav(&f).unwrap(), samples);
        assert_eq!(prompt_duration(samples.len()), Duration::from_millis(50));
    }

    #[test]
    fn alaw_and_ulaw_wavs_decode_to_linear() {
        let codes: Vec<u8> = (0..=255).collect();
        let a = load_wav(&wav(6, 1, 8000, 8, &[], &codes)).unwrap();
        let u = load_wav(&wav(7, 1, 8000, 8, &[], &codes)).unwrap();
        assert_eq!(a.len(), 256);
        for (i, &c) in codes.iter().enumerate() {
            assert_eq!(a[i], G711::Alaw.decode(c));
            assert_eq!(u[i], G711::Ulaw.decode(c));
        }
        assert_ne!(a, u);
    }

    #[test]
    fn extensible_pcm16_is_accepted() {
        let samples = [1i16, -2, 3, -4];
        let mut f = Vec::new();
        f.extend_from_slice(b"RIFF\0\0\0\0WAVEfmt ");
        f.extend_from_slice(&40u32.to_le_bytes());
        f.extend_from_slice(&0xfffeu16.to_le_bytes());
        f.extend_from_slice(&1u16.to_le_bytes());
        f.extend_from_slice(&8000u32.to_le_bytes());
        f.extend_from_slice(&16000u32.to_le_bytes());
        f.extend_from_slice(&2u16.to_le_bytes());
        f.extend_from_slice(&16u16.to_le_bytes());
        f.extend_from_slice(&22u16.to_le_bytes()); // cbSize
        f.extend_from_slice(&16u16.to_le_bytes()); // valid bits
        f.extend_from_slice(&4u32.to_le_bytes()); // channel mask
        f.extend_from_slice(&1u16.to_le_bytes()); // sub-format: PCM
        f.extend_from_slice(&[0; 14]);
        f.extend_from_slice(b"data");
        f.extend_from_slice(&8u32.to_le_bytes());
        f.extend_from_slice(&pcm16_bytes(&samples));
        assert_eq!(load_wav(&f).unwrap(), samples);
    }

    #[test]
    fn unsupported_formats_are_named() {
        let data = pcm16_bytes(&[0; 10]);
        let e = load_wav(&wav(1, 1, 16000, 16, &[], &data)).unwrap_err();
        assert_eq!(e, WavError::SampleRate(16000));
        assert_eq!(e.to_string(), "16000 Hz; only 8000 Hz mono is supported");
        let e = load_wav(&wav(1, 2, 8000, 16, &[], &data)).unwrap_err();
        assert_eq!(e.to_string(), "2 channels; only 8000 Hz mono is supported");
        let e = load_wav(&wav(3, 1, 8000, 32, &[], &data)).unwrap_err();
        assert_eq!(
            e,
            WavError::Encoding {
                format: 3,
                bits: 32
            }
        );
        assert!(e.to_string().contains("format tag 3 with 32 bits"), "{e}");
        let e = load_wav(&wav(1, 1, 8000, 8, &[], &data)).unwrap_err();
        assert_eq!(e, WavError::Encoding { format: 1, bits: 8 });
        assert_eq!(
            load_wav(&wav(1, 1, 8000, 16, &[], &[])),
            Err(WavError::Empty)
        );
        assert_eq!(load_wav(b"ID3\x04 an mp3 file"), Err(WavError::NotWav));
        assert_eq!(load_wav(b""), Err(WavError::Truncated("RIFF header")));
    }

    #[test]
    fn missing_chunks_are_errors() {
        let full = wav(1, 1, 8000, 16, &[], &pcm16_bytes(&[5; 8]));
        // Header and fmt only.
        assert_eq!(load_wav(&full[..36]), Err(WavError::NoData));
        // data before fmt.
        let mut f = b"RIFF\0\0\0\0WAVEdata".to_vec();
        f.extend_from_slice(&2u32.to_le_bytes());
        f.extend_from_slice(&[1, 0]);
        assert_eq!(load_wav(&f), Err(WavError::NoFormat));
        assert_eq!(load_wav(b"RIFF\0\0\0\0WAVE"), Err(WavError::NoFormat));
    }

    #[test]
    fn every_truncation_is_an_error_not_a_panic() {
        let full = wav(
            1,
            1,
            8000,
            16,
            b"LIST\x04\0\0\0INFO",
            &pcm16_bytes(&[7; 20]),
        );
        assert!(load_wav(&full).is_ok());
        for cut in 0..full.len() {
            let r = load_wav(&full[..cut]);
            assert!(r.is_err(), "cut at {cut} must not load: {r:?}");
        }
    }

    #[test]
    fn garbage_never_panics() {
        // Seeded xorshift bytes, with and without a plausible header in front.
        let mut x = 0x1234_5678_9abc_def0u64;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let head = wav(1, 1, 8000, 16, &[], &[]);
        for round in 0..3000 {
            let len = (next() % 200) as usize;
            let mut b: Vec<u8> = (0..len).map(|_| next() as u8).collect();
            if round % 2 == 0 {
                let keep = (next() as usize) % head.len();
                b.splice(0..0, head[..keep].iter().copied());
            }
            let _ = load_wav(&b);
        }
        // Huge declared sizes near usize::MAX do not overflow.
        let mut f = b"RIFF\0\0\0\0WAVEfmt ".to_vec();
        f.extend_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(load_wav(&f), Err(WavError::Truncated("fmt chunk")));
        let mut f = b"RIFF\0\0\0\0WAVEJUNK".to_vec();
        f.extend_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(load_wav(&f), Err(WavError::NoFormat));
    }

    #[test]
    fn comfort_noise_is_quiet_but_not_silent_in_both_laws() {
        for law in [G711::Ulaw, G711::Alaw] {
            let mut f = Filler::new(GapAudio::ComfortNoise, law, 42);
            let mut all = Vec::new();
            let mut frame = [0u8; 172];
            for _ in 0..50 {
                assert_eq!(f.next_frame(&mut frame), 160);
                all.extend_from_slice(&frame[..160]);
            }
            let level = dbov(&all, law);
            assert!((-68.0..=-58.0).contains(&level), "{law:?}: {level} dBov");
            let distinct: std::collections::HashSet<u8> = all.iter().copied().collect();
            assert!(distinct.len() >= 4, "{law:?} noise has {distinct:?}");
            assert!(f.prompt_done());
        }
        // Deterministic per seed, different across seeds.
        let frame = |seed| {
            let mut f = Filler::new(GapAudio::ComfortNoise, G711::Ulaw, seed);
            let mut b = [0u8; 160];
            f.next_frame(&mut b);
            b
        };
        assert_eq!(frame(7), frame(7));
        assert_ne!(frame(7), frame(8));
        assert_ne!(frame(0), [0xff; 160]);
    }

    #[test]
    fn prompt_plays_once_then_noise_or_silence() {
        // 400 samples = 2.5 frames of a loud constant.
        let pcm: Vec<i16> = vec![8000; 400];
        for then in [AfterPrompt::Silence, AfterPrompt::ComfortNoise] {
            let audio = GapAudio::prompt(pcm.clone(), then);
            assert_eq!(audio.prompt_duration(), Duration::from_millis(50));
            let mut f = Filler::for_payload_type(audio, 8, 1).unwrap();
            assert_eq!((f.law(), f.payload_type()), (G711::Alaw, 8));
            let loud = G711::Alaw.encode(8000);
            let mut b = [0u8; 160];
            f.next_frame(&mut b);
            assert_eq!(b, [loud; 160]);
            f.next_frame(&mut b);
            assert!(!f.prompt_done());
            f.next_frame(&mut b);
            assert!(f.prompt_done());
            assert_eq!(b[..80], [loud; 80]);
            assert!(b[80..].iter().all(|&c| c != loud));
            for _ in 0..3 {
                f.next_frame(&mut b);
                match then {
                    AfterPrompt::Silence => assert_eq!(b, [G711::Alaw.silence(); 160]),
                    AfterPrompt::ComfortNoise => {
                        let level = dbov(&b, G711::Alaw);
                        assert!((-70.0..-55.0).contains(&level), "{level}");
                    }
                }
            }
        }
    }

    #[test]
    fn only_g711_payload_types_get_a_filler_and_short_buffers_get_nothing() {
        assert!(Filler::for_payload_type(GapAudio::ComfortNoise, 0, 1).is_some());
        for pt in [3, 9, 18, 96, 101, 127] {
            assert!(Filler::for_payload_type(GapAudio::ComfortNoise, pt, 1).is_none());
        }
        let mut f = Filler::new(GapAudio::ComfortNoise, G711::Ulaw, 1);
        let mut short = [0u8; 159];
        assert_eq!(f.next_frame(&mut short), 0);
        assert_eq!(short, [0; 159]);
    }

    #[test]
    fn ulaw_and_alaw_frames_are_coded_in_their_law() {
        let audio = GapAudio::prompt(vec![-12000; 160], AfterPrompt::Silence);
        let mut u = Filler::new(audio, G711::Ulaw, 3);
        let mut a = Filler::new(audio, G711::Alaw, 3);
        let (mut bu, mut ba) = ([0u8; 160], [0u8; 160]);
        u.next_frame(&mut bu);
        a.next_frame(&mut ba);
        assert_eq!(bu, [ulaw_code(-12000); 160]);
        assert_eq!(ba, [crate::media::codec::alaw_encode(-12000); 160]);
        assert_ne!(bu, ba);
    }

    fn ulaw_code(s: i16) -> u8 {
        crate::media::codec::ulaw_encode(s)
    }

    #[test]
    fn equal_prompts_are_interned() {
        let a = GapAudio::prompt(vec![1, 2, 3, 99], AfterPrompt::Silence);
        let b = GapAudio::prompt(vec![1, 2, 3, 99], AfterPrompt::ComfortNoise);
        let (GapAudio::Prompt { pcm: pa, .. }, GapAudio::Prompt { pcm: pb, .. }) = (a, b) else {
            panic!()
        };
        assert!(std::ptr::eq(pa, pb));
        assert_eq!(
            format!("{a:?}"),
            "Prompt { samples: 4, duration: 500µs, then: Silence }"
        );
    }
}
