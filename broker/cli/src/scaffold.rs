//! `weir module init` and `weir module build`: a ready-to-build plugin crate for each kind,
//! as `rpk transform init` makes one, and its build for wasm32-wasip2.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context};

/// The kinds `init` scaffolds.
pub const KINDS: [&str; 5] = ["transform", "partitioner", "validator", "source", "sink"];

/// The SDK this `weir` was built with, for the new crate's path dependency.
pub fn default_sdk_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../sdk/plugin")
}

/// The files of a new plugin crate named `name` of `kind`: (path inside the crate, text).
pub fn files(name: &str, kind: &str, sdk: &Path) -> anyhow::Result<Vec<(String, String)>> {
    if !KINDS.contains(&kind) {
        bail!("--kind {kind:?}: use one of {}", KINDS.join(", "));
    }
    let valid = !name.is_empty()
        && name.len() <= 64
        && name.chars().next().is_some_and(|c| c.is_ascii_lowercase())
        && name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_');
    if !valid {
        bail!("{name:?} is not a crate name: lowercase letters, digits, - and _, starting with a letter, at most 64");
    }
    let ident = name.replace('-', "_");
    // The example's helpers and the SDK's names are taken.
    const TAKEN: [&str; 12] = [
        "upper_case",
        "by_first_byte",
        "not_empty",
        "numbers_from",
        "as_lines",
        "weir_plugin",
        "tests",
        "std",
        "core",
        "super",
        "self",
        "crate",
    ];
    if TAKEN.contains(&ident.as_str()) {
        bail!("{name:?} is a name the example code uses; choose another");
    }
    let cargo = format!(
        "[package]\nname = \"{name}\"\nversion = \"0.1.0\"\nedition = \"2021\"\npublish = false\n\n\
         [lib]\n# cdylib: the component; rlib: the host unit tests.\ncrate-type = [\"cdylib\", \"rlib\"]\n\n\
         [dependencies]\nweir-plugin = {{ path = {:?} }}\n\n\
         # A crate of its own even inside another workspace's folder.\n[workspace]\n",
        sdk.display().to_string()
    );
    let lib = match kind {
        "transform" => TRANSFORM,
        "partitioner" => PARTITIONER,
        "validator" => VALIDATOR,
        "source" => SOURCE,
        _ => SINK,
    }
    .replace("NAME", &ident);
    let mut files = vec![("Cargo.toml".to_owned(), cargo), ("src/lib.rs".to_owned(), lib)];
    if kind == "source" || kind == "sink" {
        let topic = if kind == "source" { "topic = \"input\"" } else { "topics = [\"output\"]" };
        files.push((
            format!("{name}.toml"),
            format!(
                "# weir connector create --file {name}.toml\nname = \"{name}\"\nkind = \"{kind}\"\n\
                 component = \"target/wasm32-wasip2/release/{ident}.wasm\"\n{topic}\n\n[params]\n\n\
                 [capabilities]\n# dir = \"/absolute/folder\"   # seen by the module as /data\n\
                 # dir_access = \"read-only\"\n"
            ),
        ));
    }
    Ok(files)
}

/// Writes a new crate into `dir` (which must not exist yet).
pub fn init(dir: &Path, name: &str, kind: &str, sdk: &Path) -> anyhow::Result<()> {
    if dir.exists() {
        bail!("{} exists already; init makes a new folder", dir.display());
    }
    for (path, text) in files(name, kind, sdk)? {
        let path = dir.join(path);
        std::fs::create_dir_all(path.parent().expect("a file in the crate"))?;
        std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

/// Builds the crate at `dir` for wasm32-wasip2 (adding the target with rustup if it is
/// missing) and answers the component's path.
pub fn build(dir: &Path) -> anyhow::Result<PathBuf> {
    let manifest = dir.join("Cargo.toml");
    let text = std::fs::read_to_string(&manifest).with_context(|| format!("reading {}", manifest.display()))?;
    let package: toml::Value = toml::from_str(&text).with_context(|| format!("{} is not TOML", manifest.display()))?;
    let name = package
        .get("package")
        .and_then(|p| p.get("name"))
        .and_then(toml::Value::as_str)
        .with_context(|| format!("{} names no package", manifest.display()))?
        .replace('-', "_");
    let installed = Command::new("rustup").args(["target", "list", "--installed"]).current_dir(dir).output();
    if let Ok(out) = installed {
        if !String::from_utf8_lossy(&out.stdout).lines().any(|l| l.trim() == "wasm32-wasip2") {
            eprintln!("adding the wasm32-wasip2 target (rustup target add wasm32-wasip2)");
            let status = Command::new("rustup").args(["target", "add", "wasm32-wasip2"]).current_dir(dir).status()?;
            anyhow::ensure!(status.success(), "rustup target add wasm32-wasip2 failed ({status})");
        }
    }
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = Command::new(cargo)
        .args(["build", "--release", "--target", "wasm32-wasip2", "--manifest-path"])
        .arg(&manifest)
        .status()
        .context("running cargo")?;
    anyhow::ensure!(status.success(), "cargo build failed ({status})");
    let target = std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| dir.join("target"), PathBuf::from);
    let component = target.join("wasm32-wasip2").join("release").join(format!("{name}.wasm"));
    anyhow::ensure!(component.exists(), "{} was not produced", component.display());
    Ok(component)
}

const TRANSFORM: &str = r#"//! A transform: each record in, zero or more records out.

use weir_plugin::{transform, Error, Output, Record};

/// Upper-cases each value. Deploy: weir module deploy target/wasm32-wasip2/release/NAME.wasm
/// --name NAME --kind transform --input IN --output OUT
#[transform]
fn NAME(record: Record) -> Result<Vec<Output>, Error> {
    Ok(vec![Output::from_record(&record).with_value(upper_case(record.value_str()?))])
}

pub fn upper_case(text: &str) -> String {
    text.to_uppercase()
}

#[cfg(test)]
mod tests {
    #[test]
    fn shouts() {
        assert_eq!(super::upper_case("hi"), "HI");
    }
}
"#;

const PARTITIONER: &str = r#"//! A partitioner: the partition of each record a producer leaves to the broker.

use weir_plugin::{partitioner, Error, Record};

/// By the value's first byte. Deploy: weir module deploy ... --kind partitioner --topic T
#[partitioner]
fn NAME(record: &Record, partition_count: u32) -> Result<u32, Error> {
    Ok(by_first_byte(record.value.as_deref().unwrap_or_default(), partition_count))
}

pub fn by_first_byte(value: &[u8], partition_count: u32) -> u32 {
    u32::from(value.first().copied().unwrap_or(0)) % partition_count.max(1)
}

#[cfg(test)]
mod tests {
    #[test]
    fn stays_in_range() {
        assert_eq!(super::by_first_byte(b"a", 3), 97 % 3);
        assert_eq!(super::by_first_byte(b"", 3), 0);
    }
}
"#;

const VALIDATOR: &str = r#"//! A validator: every produced record is checked before anything is stored.

use weir_plugin::{validator, Error, Record};

/// Refuses empty values. Deploy: weir module deploy ... --kind validator --topic T
#[validator]
fn NAME(record: &Record) -> Result<(), Error> {
    not_empty(record.value.as_deref().unwrap_or_default())
}

pub fn not_empty(value: &[u8]) -> Result<(), Error> {
    if value.is_empty() {
        return Err(Error::new("the value is empty"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn refuses_empty_values() {
        assert!(super::not_empty(b"x").is_ok());
        assert!(super::not_empty(b"").is_err());
    }
}
"#;

const SOURCE: &str = r#"//! A source: polled with its last position, it answers records and the position after them.

use weir_plugin::{source, Error, Output, Polled};

/// Counts up: one record per number. Create: weir connector create --file NAME.toml
#[source]
fn NAME(position: Option<Vec<u8>>, max_records: u32) -> Result<Polled, Error> {
    let next = match position {
        Some(bytes) => String::from_utf8(bytes)?.parse::<u64>()?,
        None => 0,
    };
    Ok(numbers_from(next, max_records.min(100)))
}

pub fn numbers_from(next: u64, count: u32) -> Polled {
    let end = next + u64::from(count);
    let records = (next..end).map(|n| Output::new(n.to_string())).collect();
    Polled { records, position: end.to_string().into_bytes() }
}

#[cfg(test)]
mod tests {
    #[test]
    fn goes_on_from_its_position() {
        let polled = super::numbers_from(5, 2);
        assert_eq!(polled.records.len(), 2);
        assert_eq!(polled.position, b"7");
    }
}
"#;

const SINK: &str = r#"//! A sink: delivers batches; Ok per record, or an error for the whole batch to retry it.

use std::io::Write;

use weir_plugin::{sink, Error, Record};

/// Appends each value as a line to /data/out.log (grant a folder, read-write).
/// Create: weir connector create --file NAME.toml
#[sink]
fn NAME(records: Vec<Record>) -> Result<Vec<Result<(), Error>>, Error> {
    let mut file = std::fs::OpenOptions::new().create(true).append(true).open("/data/out.log")?;
    file.write_all(&as_lines(&records))?;
    Ok(records.iter().map(|_| Ok(())).collect())
}

pub fn as_lines(records: &[Record]) -> Vec<u8> {
    let mut text = Vec::new();
    for record in records {
        text.extend_from_slice(record.value.as_deref().unwrap_or_default());
        text.push(b'\n');
    }
    text
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_line_per_record() {
        let record = |v: &str| weir_plugin::Record {
            topic: "t".into(),
            partition: 0,
            offset: 0,
            timestamp: 0,
            key: None,
            value: Some(v.as_bytes().to_vec()),
            headers: vec![],
        };
        assert_eq!(super::as_lines(&[record("a"), record("b")]), b"a\nb\n");
    }
}
"#;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_gets_its_files_and_bad_names_or_kinds_are_refused() {
        let sdk = Path::new("/sdk/plugin");
        for kind in KINDS {
            let files = files("my-plugin", kind, sdk).unwrap();
            let lib = &files.iter().find(|(p, _)| p == "src/lib.rs").unwrap().1;
            assert!(lib.contains(&format!("#[{kind}]\nfn my_plugin(")), "{kind}: {lib}");
            assert!(lib.contains("#[cfg(test)]"), "{kind} has a host unit test");
            let cargo = &files[0].1;
            assert!(cargo.contains("weir-plugin = { path = \"/sdk/plugin\" }") && cargo.contains("cdylib"), "{cargo}");
            let config = files.iter().any(|(p, _)| p == "my-plugin.toml");
            assert_eq!(config, kind == "source" || kind == "sink", "{kind}: a config file for connectors only");
        }
        assert!(files("Bad Name", "transform", sdk).unwrap_err().to_string().contains("not a crate name"));
        assert!(files("ok", "router", sdk).unwrap_err().to_string().contains("use one of transform"));
    }
}
