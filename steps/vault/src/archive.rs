//! Streaming check of a raft snapshot archive against its own `SHA256SUMS`.
//!
//! Vault and OpenBao serve a snapshot as a gzip'd tar of `meta.json`, `state.bin`, `SHA256SUMS`
//! and `SHA256SUMS.sealed`. A standby can hand out an archive without the sealed sums (upstream
//! Vault issue 15258) and old versions truncated it without an error, so the archive is checked
//! as it streams past: every member listed in `SHA256SUMS` must hash to its listed value, the
//! four members must be there, `meta.json`'s `Size` must be `state.bin`'s length, and the gzip
//! trailer's CRC must match. Nothing is held in memory but the two small text members.

use std::collections::BTreeMap;
use std::io::{BufRead, Read};

use flate2::bufread::GzDecoder;
use serde::Deserialize;
use sha2::{Digest, Sha256};

/// Members every snapshot archive must have.
pub const REQUIRED: [&str; 4] = ["meta.json", "state.bin", "SHA256SUMS", "SHA256SUMS.sealed"];

/// Members whose contents are kept (they are small); anything larger is refused.
const SMALL_LIMIT: u64 = 1 << 20;

/// Why an archive is not a whole, self-consistent raft snapshot.
#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    /// The gzip or tar stream is cut short or malformed.
    #[error("the archive is truncated or not a gzip tar: {0}")]
    Malformed(#[source] std::io::Error),
    /// A required member is absent.
    #[error("the archive has no {member}{hint}", member = .0, hint = missing_hint(.0))]
    Missing(&'static str),
    /// A member's content does not match `SHA256SUMS`.
    #[error("{name} in the archive hashes to {actual} but SHA256SUMS says {expected}")]
    Mismatch {
        /// The member.
        name: String,
        /// The digest `SHA256SUMS` lists.
        expected: String,
        /// The digest of its content.
        actual: String,
    },
    /// `SHA256SUMS` lists a member the archive lacks, or omits one it must list.
    #[error("SHA256SUMS {0}")]
    Sums(String),
    /// `meta.json` is unreadable or disagrees with `state.bin`.
    #[error("meta.json {0}")]
    Meta(String),
}

/// Why a member may be missing: only a missing `SHA256SUMS.sealed` is the known standby fault.
fn missing_hint(member: &str) -> &'static str {
    if member == "SHA256SUMS.sealed" {
        " (a standby may have served an incomplete snapshot, upstream Vault issue 15258)"
    } else {
        ""
    }
}

/// What a verified archive says about itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArchiveInfo {
    /// Raft index of the snapshot.
    pub index: u64,
    /// Raft term of the snapshot.
    pub term: u64,
    /// Length of `state.bin`.
    pub state_bytes: u64,
    /// Bytes after the end of the gzip stream (expected 0; logged if not).
    pub trailing_bytes: u64,
    /// The seal of the cluster the snapshot was taken from, as its own data says (`shamir`,
    /// `transit`, ...): `None` where `state.bin` holds no readable `core/seal-config`.
    pub seal_type: Option<String>,
}

/// Finds the seal's configuration in `state.bin` as it streams past. OpenBao and Vault keep it
/// in plain JSON under the physical key `core/seal-config` (it is read before the barrier is
/// unsealed, so it is never encrypted), and the raft FSM snapshot is a stream of length-
/// delimited protobuf `StorageEntry { key = 1; value = 2; }` (physical/raft/fsm.go `writeTo`).
/// So the entry starts with the bytes `0a 10 "core/seal-config" 12 <varint length>` followed
/// by `{"type":"shamir",...}`; the two tag bytes pin the exact key (not a namespace's).
#[derive(Default)]
struct SealSniffer {
    window: Vec<u8>,
    found: Option<String>,
}

impl SealSniffer {
    const NEEDLE: &'static [u8] = b"\x0a\x10core/seal-config\x12";
    /// Bytes kept between chunks: the needle and a seal configuration fit in it.
    const KEEP: usize = 4096;

    fn feed(&mut self, chunk: &[u8]) {
        if self.found.is_some() {
            return;
        }
        self.window.extend_from_slice(chunk);
        if let Some(at) = self
            .window
            .windows(Self::NEEDLE.len())
            .position(|w| w == Self::NEEDLE)
        {
            let rest = &self.window[at + Self::NEEDLE.len()..];
            if let Some(t) = Self::seal_type(rest) {
                self.found = Some(t);
                self.window = Vec::new();
                return;
            }
            if rest.len() >= Self::KEEP {
                // Not the shape expected: give up rather than guess.
                self.found = Some(String::new());
                return;
            }
            self.window.drain(..at);
            return;
        }
        let cut = self.window.len().saturating_sub(Self::KEEP);
        self.window.drain(..cut);
    }

    /// The `type` of the JSON value after the needle, once all of it is there.
    fn seal_type(rest: &[u8]) -> Option<String> {
        let (mut len, mut shift, mut i) = (0usize, 0u32, 0usize);
        loop {
            let b = *rest.get(i)?;
            len |= usize::from(b & 0x7f) << shift;
            i += 1;
            if b & 0x80 == 0 {
                break;
            }
            shift += 7;
            if shift > 28 {
                return Some(String::new());
            }
        }
        let value = rest.get(i..i + len)?;
        let v: serde_json::Value = serde_json::from_slice(value).unwrap_or_default();
        Some(v["type"].as_str().unwrap_or_default().to_owned())
    }

    fn seal(self) -> Option<String> {
        self.found.filter(|t| !t.is_empty())
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Meta {
    index: u64,
    term: u64,
    size: u64,
}

/// Reads a whole snapshot archive from `input` and checks it. `input` is read to its end even
/// after the tar's end marker, so a caller teeing the stream sees every byte. It is a
/// [`BufRead`] so that the gzip decoder reads the caller's buffers in place, without a copy.
///
/// # Errors
/// An [`ArchiveError`] saying what is wrong with the archive.
pub fn verify(input: impl BufRead) -> Result<ArchiveInfo, ArchiveError> {
    let mut archive = tar::Archive::new(GzDecoder::new(input));
    let mut digests: BTreeMap<String, (String, u64)> = BTreeMap::new();
    let mut small: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    let mut buf = vec![0u8; 256 << 10];
    let mut sniffer = SealSniffer::default();
    for entry in archive.entries().map_err(ArchiveError::Malformed)? {
        let mut entry = entry.map_err(ArchiveError::Malformed)?;
        let name = entry
            .path()
            .map_err(ArchiveError::Malformed)?
            .to_string_lossy()
            .into_owned();
        let keep = name == "meta.json" || name == "SHA256SUMS";
        let state = name == "state.bin";
        if keep && entry.size() > SMALL_LIMIT {
            return Err(ArchiveError::Sums(format!(
                "member {name} is {} bytes, far too large",
                entry.size()
            )));
        }
        let mut hasher = Sha256::new();
        let mut kept = Vec::new();
        let mut len = 0u64;
        loop {
            let n = entry.read(&mut buf).map_err(ArchiveError::Malformed)?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
            if state {
                sniffer.feed(&buf[..n]);
            }
            if keep {
                kept.extend_from_slice(&buf[..n]);
            }
            len += n as u64;
        }
        if keep {
            small.insert(name.clone(), kept);
        }
        digests.insert(name, (hex::encode(hasher.finalize()), len));
    }
    // Past the tar's end marker: read the gzip stream to its end so its CRC and length are
    // checked, then count anything after it.
    let mut gz = archive.into_inner();
    std::io::copy(&mut gz, &mut std::io::sink()).map_err(ArchiveError::Malformed)?;
    let trailing_bytes = std::io::copy(&mut gz.into_inner(), &mut std::io::sink())
        .map_err(ArchiveError::Malformed)?;

    for required in REQUIRED {
        if !digests.contains_key(required) {
            return Err(ArchiveError::Missing(required));
        }
    }
    let sums = String::from_utf8(small.remove("SHA256SUMS").unwrap_or_default())
        .map_err(|_| ArchiveError::Sums("is not text".into()))?;
    let mut listed = Vec::new();
    for line in sums.lines().filter(|l| !l.trim().is_empty()) {
        let (expected, name) = line
            .split_once(char::is_whitespace)
            .map(|(h, n)| {
                (
                    h.to_ascii_lowercase(),
                    n.trim_start().trim_start_matches('*').to_owned(),
                )
            })
            .ok_or_else(|| ArchiveError::Sums(format!("has a malformed line {line:?}")))?;
        let Some((actual, _)) = digests.get(&name) else {
            return Err(ArchiveError::Sums(format!(
                "lists {name}, which the archive lacks"
            )));
        };
        if *actual != expected {
            return Err(ArchiveError::Mismatch {
                name,
                expected,
                actual: actual.clone(),
            });
        }
        listed.push(name);
    }
    for must in ["meta.json", "state.bin"] {
        if !listed.iter().any(|n| n == must) {
            return Err(ArchiveError::Sums(format!("does not list {must}")));
        }
    }
    let meta: Meta = serde_json::from_slice(&small.remove("meta.json").unwrap_or_default())
        .map_err(|e| ArchiveError::Meta(format!("is not valid: {e}")))?;
    let state_bytes = digests["state.bin"].1;
    if meta.size != state_bytes {
        return Err(ArchiveError::Meta(format!(
            "says Size {} but state.bin has {state_bytes} bytes",
            meta.size
        )));
    }
    Ok(ArchiveInfo {
        index: meta.index,
        term: meta.term,
        state_bytes,
        trailing_bytes,
        seal_type: sniffer.seal(),
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use flate2::{Compression, write::GzEncoder};

    fn sha(data: &[u8]) -> String {
        hex::encode(Sha256::digest(data))
    }

    /// Builds an archive like Vault's from members; `sums` overrides the SHA256SUMS text.
    pub(crate) fn build(members: &[(&str, &[u8])], sums: Option<String>) -> Vec<u8> {
        let mut text = String::new();
        for (name, data) in members {
            if *name == "meta.json" || *name == "state.bin" {
                text.push_str(&format!("{}  {name}\n", sha(data)));
            }
        }
        let sums = sums.unwrap_or(text);
        let mut builder = tar::Builder::new(GzEncoder::new(Vec::new(), Compression::fast()));
        let mut all: Vec<(&str, &[u8])> = members.to_vec();
        all.push(("SHA256SUMS", sums.as_bytes()));
        for (name, data) in all {
            let mut header = tar::Header::new_gnu();
            header.set_size(data.len() as u64);
            header.set_mode(0o600);
            header.set_cksum();
            builder.append_data(&mut header, name, data).unwrap();
        }
        builder.into_inner().unwrap().finish().unwrap()
    }

    pub(crate) fn good() -> Vec<u8> {
        whole(&vec![7u8; 300_000], 10, 2)
    }

    /// A whole archive around `state`, its meta.json saying raft `index` and `term`.
    pub(crate) fn whole(state: &[u8], index: u64, term: u64) -> Vec<u8> {
        let meta = format!(
            r#"{{"Version":1,"ID":"{term}-{index}-1","Index":{index},"Term":{term},"Size":{}}}"#,
            state.len()
        );
        build(
            &[
                ("meta.json", meta.as_bytes()),
                ("state.bin", state),
                ("SHA256SUMS.sealed", b"sealed"),
            ],
            None,
        )
    }

    #[test]
    fn a_whole_archive_verifies() {
        let info = verify(&good()[..]).unwrap();
        assert_eq!(
            info,
            ArchiveInfo {
                index: 10,
                term: 2,
                state_bytes: 300_000,
                trailing_bytes: 0,
                seal_type: None,
            }
        );
    }

    /// A `state.bin` holding the `core/seal-config` entry at `at`, as OpenBao writes it.
    fn state_with_seal(at: usize, len: usize, json: &str) -> Vec<u8> {
        let mut state = vec![0u8; len];
        let mut entry = b"\x0a\x10core/seal-config\x12".to_vec();
        entry.push(u8::try_from(json.len()).unwrap());
        entry.extend_from_slice(json.as_bytes());
        state[at..at + entry.len()].copy_from_slice(&entry);
        state
    }

    #[test]
    fn the_seal_type_is_read_from_state_bin_even_across_reads() {
        let json = r#"{"type":"transit","secret_shares":1,"secret_threshold":1,"stored_shares":1}"#;
        // Straddling the 256 KiB read buffer, and well inside it.
        for at in [(256 << 10) - 10, 1000] {
            let archive = whole(&state_with_seal(at, 300_000, json), 10, 2);
            assert_eq!(
                verify(&archive[..]).unwrap().seal_type.as_deref(),
                Some("transit"),
                "at {at}"
            );
        }
        // A namespace's seal config (another key) is not the cluster's.
        let mut state = state_with_seal(1000, 3000, json);
        state[1001] = 0x1c;
        assert_eq!(verify(&whole(&state, 10, 2)[..]).unwrap().seal_type, None);
    }

    #[test]
    fn truncation_anywhere_is_caught() {
        let data = good();
        for cut in [
            10,
            data.len() / 3,
            data.len() / 2,
            data.len() - 9,
            data.len() - 1,
        ] {
            let err = verify(&data[..cut]).unwrap_err();
            assert!(
                matches!(err, ArchiveError::Malformed(_)),
                "cut at {cut}: {err}"
            );
        }
    }

    #[test]
    fn a_changed_state_byte_is_caught() {
        let state = vec![7u8; 1000];
        let meta = r#"{"Index":1,"Term":1,"Size":1000}"#;
        let sums = format!(
            "{}  meta.json\n{}  state.bin\n",
            sha(meta.as_bytes()),
            sha(&[8u8; 1000])
        );
        let data = build(
            &[
                ("meta.json", meta.as_bytes()),
                ("state.bin", &state),
                ("SHA256SUMS.sealed", b"s"),
            ],
            Some(sums),
        );
        assert!(
            matches!(verify(&data[..]).unwrap_err(), ArchiveError::Mismatch { name, .. } if name == "state.bin")
        );
    }

    #[test]
    fn a_missing_sealed_sums_is_caught() {
        let meta = r#"{"Index":1,"Term":1,"Size":3}"#;
        let data = build(
            &[("meta.json", meta.as_bytes()), ("state.bin", b"abc")],
            None,
        );
        let err = verify(&data[..]).unwrap_err();
        assert!(
            matches!(err, ArchiveError::Missing("SHA256SUMS.sealed")),
            "{err}"
        );
        assert!(err.to_string().contains("15258"));
    }

    #[test]
    fn only_a_missing_sealed_sums_names_issue_15258() {
        let meta = r#"{"Index":1,"Term":1,"Size":3}"#;
        let data = build(
            &[("meta.json", meta.as_bytes()), ("SHA256SUMS.sealed", b"s")],
            Some(format!("{}  meta.json\n", sha(meta.as_bytes()))),
        );
        let err = verify(&data[..]).unwrap_err();
        assert!(matches!(err, ArchiveError::Missing("state.bin")), "{err}");
        assert!(!err.to_string().contains("15258"), "{err}");
    }

    #[test]
    fn sums_must_cover_state_and_meta() {
        let meta = r#"{"Index":1,"Term":1,"Size":3}"#;
        let sums = format!("{}  meta.json\n", sha(meta.as_bytes()));
        let data = build(
            &[
                ("meta.json", meta.as_bytes()),
                ("state.bin", b"abc"),
                ("SHA256SUMS.sealed", b"s"),
            ],
            Some(sums),
        );
        assert!(
            verify(&data[..])
                .unwrap_err()
                .to_string()
                .contains("does not list state.bin")
        );
    }

    #[test]
    fn meta_size_must_match_state() {
        let meta = r#"{"Index":1,"Term":1,"Size":4}"#;
        let data = build(
            &[
                ("meta.json", meta.as_bytes()),
                ("state.bin", b"abc"),
                ("SHA256SUMS.sealed", b"s"),
            ],
            None,
        );
        assert!(matches!(
            verify(&data[..]).unwrap_err(),
            ArchiveError::Meta(_)
        ));
    }

    #[test]
    fn a_flipped_byte_inside_the_gzip_stream_is_caught() {
        let mut data = good();
        let at = data.len() / 2;
        data[at] ^= 0x5a;
        assert!(verify(&data[..]).is_err());
    }
}
