//! Tails a file in the connector's granted directory, one record per line (without its line
//! end), across rotation and restarts.
//!
//! Parameters: `path`, the file's path inside the granted directory (default `input.log`);
//! `rotated`, the name the file gets when it is rotated (default `<path>.1`).
//!
//! The position is `<k>:<fingerprint>:<offset>`: the offset after the last line read and a
//! fingerprint (FNV-1a) of the file's first `k` bytes, `k` at most 64 and within what was
//! read. A file whose first bytes differ, or that is shorter than the offset, is a new file:
//! the rest of the rotated one (if it is there with the same first bytes) is read first, then
//! the new file from its start. A line not ended yet is left for the next poll, unless it
//! fills a whole read, when it is cut there.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};

use weir_plugin::{source, Error, Output, Polled};

/// The granted directory, as the module sees it.
const DIR: &str = "/data";
/// Most bytes read per poll.
const READ_BYTES_MAX: usize = 1 << 20;
const FINGERPRINT_BYTES: u64 = 64;

#[source]
fn file_source(position: Option<Vec<u8>>, max_records: u32) -> Result<Polled, Error> {
    let path = format!("{DIR}/{}", weir_plugin::param("path").unwrap_or_else(|| "input.log".into()));
    let rotated = weir_plugin::param("rotated").map_or_else(|| format!("{path}.1"), |r| format!("{DIR}/{r}"));
    let position = match position {
        Some(bytes) => Position::parse(&bytes)?,
        None => Position::default(),
    };
    let (polled, new_file) = poll(DIR, &path, &rotated, position, max_records as usize)?;
    if new_file {
        weir_plugin::log::info(&format!("{path} was rotated or truncated; reading it from its start"));
    }
    weir_plugin::counter_add("lines", polled.records.len() as u64);
    Ok(polled)
}

/// Where reading stopped: the offset, and the fingerprint of the file's first `k` bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Position {
    pub k: u64,
    pub fingerprint: u64,
    pub offset: u64,
}

impl Default for Position {
    /// The start of any file: no bytes read, the fingerprint of none.
    fn default() -> Self {
        Self { k: 0, fingerprint: fnv1a(&[]), offset: 0 }
    }
}

impl Position {
    pub fn parse(bytes: &[u8]) -> Result<Self, Error> {
        let text = std::str::from_utf8(bytes).map_err(|_| Error::new("the stored position is not UTF-8"))?;
        let mut parts = text.split(':');
        let mut next =
            |what: &str| parts.next().ok_or_else(|| Error::new(format!("the stored position {text:?} has no {what}")));
        let k = next("k")?.parse().map_err(|e| Error::new(format!("position {text:?}: k: {e}")))?;
        let fingerprint = u64::from_str_radix(next("fingerprint")?, 16)
            .map_err(|e| Error::new(format!("position {text:?}: fingerprint: {e}")))?;
        let offset = next("offset")?.parse().map_err(|e| Error::new(format!("position {text:?}: offset: {e}")))?;
        Ok(Self { k, fingerprint, offset })
    }

    pub fn encode(&self) -> Vec<u8> {
        format!("{}:{:016x}:{}", self.k, self.fingerprint, self.offset).into_bytes()
    }
}

pub fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, b| (hash ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3))
}

/// The fingerprint of `file`'s first `k` bytes, or `None` if it is shorter.
fn fingerprint(file: &mut File, k: u64) -> Result<Option<u64>, Error> {
    let mut head = vec![0u8; k as usize];
    file.seek(SeekFrom::Start(0))?;
    match file.read_exact(&mut head) {
        Ok(()) => Ok(Some(fnv1a(&head))),
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// Whether `file` is the one `position` was taken in.
fn same_file(file: &mut File, position: &Position) -> Result<bool, Error> {
    let len = file.metadata()?.len();
    Ok(len >= position.offset && fingerprint(file, position.k)? == Some(position.fingerprint))
}

/// Whether `path` names a file below `dir` by its own spelling.
fn stays_inside(dir: &str, path: &str) -> bool {
    path.strip_prefix(dir).is_some_and(|rest| rest.starts_with('/') && !rest.split('/').any(|part| part == ".."))
}

/// The lines after `position`, and whether they come from a new file (rotated or truncated).
pub fn poll(
    dir: &str,
    path: &str,
    rotated: &str,
    position: Position,
    max_records: usize,
) -> Result<(Polled, bool), Error> {
    let mut file = match File::open(path) {
        Ok(file) => file,
        // Between a rotation and the new file's creation there is none: read on later. (Not
        // for a path that leaves the directory: the host denies those, and that is an error.)
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && std::fs::metadata(dir).is_err() => {
            return Err(Error::new(format!(
                "opening {path}: {e}; {dir} is not there: the connector has no directory granted (capabilities.dir)"
            )))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && stays_inside(dir, path) => {
            return Ok((Polled { records: vec![], position: position.encode() }, false))
        }
        Err(e) => return Err(Error::new(format!("opening {path}: {e}"))),
    };
    if !same_file(&mut file, &position)? {
        // Rotated: finish the old file first, if it is where rotation puts it.
        if let Ok(mut old) = File::open(rotated) {
            if same_file(&mut old, &position)? {
                let polled = read_lines(&mut old, position, max_records)?;
                if !polled.records.is_empty() {
                    return Ok((polled, false));
                }
            }
        }
        return Ok((read_lines(&mut file, Position::default(), max_records)?, true));
    }
    Ok((read_lines(&mut file, position, max_records)?, false))
}

/// Up to `max_records` whole lines from `position`, and the position after them.
fn read_lines(file: &mut File, position: Position, max_records: usize) -> Result<Polled, Error> {
    file.seek(SeekFrom::Start(position.offset))?;
    let mut chunk = Vec::new();
    file.take(READ_BYTES_MAX as u64).read_to_end(&mut chunk)?;
    let mut records = Vec::new();
    let mut used = 0usize;
    while records.len() < max_records {
        let rest = &chunk[used..];
        match rest.iter().position(|b| *b == b'\n') {
            Some(end) => {
                let line = rest[..end].strip_suffix(b"\r").unwrap_or(&rest[..end]);
                records.push(Output::new(line.to_vec()));
                used += end + 1;
            }
            // A line longer than a whole read is cut there rather than never read.
            None if used == 0 && chunk.len() == READ_BYTES_MAX => {
                records.push(Output::new(rest.to_vec()));
                used = chunk.len();
            }
            None => break,
        }
    }
    let offset = position.offset + used as u64;
    let k = offset.min(FINGERPRINT_BYTES);
    let fingerprint = if k == position.k { position.fingerprint } else { self::fingerprint(file, k)?.unwrap_or(0) };
    Ok(Polled { records, position: Position { k, fingerprint, offset }.encode() })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines((polled, _): &(Polled, bool)) -> Vec<String> {
        polled.records.iter().map(|r| String::from_utf8(r.value.clone().unwrap()).unwrap()).collect()
    }

    #[test]
    fn reads_whole_lines_resumes_from_its_position_and_follows_a_rotation() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().to_str().unwrap();
        let path = dir.path().join("app.log").to_str().unwrap().to_owned();
        let rotated = format!("{path}.1");
        let (first, _) = poll(root, &path, &rotated, Position::default(), 10).unwrap();
        assert!(first.records.is_empty(), "no file yet: nothing, and no error");
        std::fs::write(&path, "").unwrap();
        assert!(!poll(root, &path, &rotated, Position::default(), 10).unwrap().1, "a first file is not a rotated one");

        std::fs::write(&path, "one\ntwo\r\nthree-not-ended").unwrap();
        let polled = poll(root, &path, &rotated, Position::parse(&first.position).unwrap(), 10).unwrap();
        assert_eq!(lines(&polled), ["one", "two"]);
        let at = Position::parse(&polled.0.position).unwrap();
        assert_eq!(at.offset, 9);

        // At most max_records, then on from there.
        std::fs::write(&path, "one\ntwo\r\nthree\nfour\nfive\n").unwrap();
        let polled = poll(root, &path, &rotated, at, 2).unwrap();
        assert_eq!(lines(&polled), ["three", "four"]);
        let at = Position::parse(&polled.0.position).unwrap();

        // Rotated with a line not read yet: the rest of the old file first, then the new one.
        std::fs::rename(&path, &rotated).unwrap();
        std::fs::write(&path, "six\n").unwrap();
        let polled = poll(root, &path, &rotated, at, 10).unwrap();
        assert_eq!(lines(&polled), ["five"]);
        assert!(!polled.1, "the rest of the old file is not a new file");
        let polled = poll(root, &path, &rotated, Position::parse(&polled.0.position).unwrap(), 10).unwrap();
        assert_eq!(lines(&polled), ["six"]);
        assert!(polled.1, "the new file is");
        let at = Position::parse(&polled.0.position).unwrap();

        // Truncated in place: from the start.
        std::fs::write(&path, "seven\n").unwrap();
        assert_eq!(lines(&poll(root, &path, &rotated, at, 10).unwrap()), ["seven"]);

        // A file outside the directory that is not there is an error, not a wait.
        let outside = format!("{root}/../elsewhere.log");
        let err = poll(root, &outside, &rotated, Position::default(), 10).unwrap_err();
        assert!(err.message().contains("opening") && err.message().contains("elsewhere.log"), "{err}");
    }

    #[test]
    fn positions_round_trip_and_bad_ones_are_named() {
        let p = Position { k: 64, fingerprint: 0xabc, offset: 1234 };
        assert_eq!(Position::parse(&p.encode()).unwrap(), p);
        for (bad, says) in
            [(&b"12"[..], "no fingerprint"), (b"x:0:0", "k"), (b"1:zz:0", "fingerprint"), (b"\xff", "UTF-8")]
        {
            let e = Position::parse(bad).unwrap_err();
            assert!(e.message().contains(says), "{e}");
        }
    }
}
