//! Consumer positions kept outside Kafka, to restore when partitions are assigned: see
//! [`CheckpointStore`].
//!

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};

use super::TopicPartition;
use crate::lock;

/// Where a consumer keeps its positions outside Kafka.
///
/// Offsets are the next offset to read of a partition, never a record's own offset.
///
/// A [`CheckpointStore`] remembers, for each topic and partition, the offset a consumer should
/// read next. Save positions as records are processed (in the same place as their results, if you
/// can), and when partitions are assigned, seek each one to what [`CheckpointStore::load`] returns.
///
/// Offsets stored are always the **next offset to read**, as with Kafka's committed offsets: after
/// processing the record at offset 41, save 42. Never save a record's own offset, or that record
/// is processed twice after a restart.
///
/// Two stores come with the crate: [`MemoryCheckpoints`] (tests, and state that lives as long as
/// the process) and [`FileCheckpoints`] (a JSON file, rewritten atomically). Share one between
/// tasks with an [`Arc`], which is a store too.
///
/// # Example
///
/// ```
/// use kafka_kit::consumer::{CheckpointStore, MemoryCheckpoints};
///
/// let store = MemoryCheckpoints::new();
/// // The record at offset 41 of orders[0] is processed: the next one to read is 42.
/// store.save(&[("orders", 0, 42)])?;
///
/// assert_eq!(store.load("orders", 0)?, Some(42));
/// assert_eq!(store.load("orders", 1)?, None); // never saved: start where the consumer's config says
/// # Ok::<(), kafka_kit::consumer::CheckpointError>(())
/// ```
pub trait CheckpointStore: Send + Sync + 'static {
    /// The next offset to read of `topic`/`partition`, if one was saved.
    fn load(&self, topic: &str, partition: i32) -> Result<Option<i64>, CheckpointError>;

    /// Saves the next offsets to read of several partitions, all or none.
    ///
    /// Each entry is `(topic, partition, next offset)`; if a partition appears twice, the last
    /// entry wins. A negative offset fails with [`CheckpointError::NegativeOffset`] and saves
    /// nothing.
    fn save(&self, offsets: &[(&str, i32, i64)]) -> Result<(), CheckpointError>;
}

pub use crate::error::CheckpointError;

/// Positions by topic and partition.
type Offsets = BTreeMap<(String, i32), i64>;

/// Checkpoints in memory: for tests, and for state that lives as long as the process.
#[derive(Debug, Default)]
pub struct MemoryCheckpoints {
    offsets: Mutex<Offsets>,
}

impl MemoryCheckpoints {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// A copy of everything saved: the next offset to read by `(topic, partition)`.
    pub fn snapshot(&self) -> BTreeMap<TopicPartition, i64> {
        lock(&self.offsets)
            .iter()
            .map(|((topic, partition), offset)| (TopicPartition::new(topic, *partition), *offset))
            .collect()
    }
}

impl CheckpointStore for MemoryCheckpoints {
    fn load(&self, topic: &str, partition: i32) -> Result<Option<i64>, CheckpointError> {
        Ok(lock(&self.offsets)
            .get(&(topic.to_owned(), partition))
            .copied())
    }

    fn save(&self, offsets: &[(&str, i32, i64)]) -> Result<(), CheckpointError> {
        validate(offsets)?;
        apply(&mut lock(&self.offsets), offsets);
        Ok(())
    }
}

/// Checkpoints in a JSON file, rewritten atomically on each save.
///
/// The file holds the next offset to read of each partition, by topic, pretty-printed:
///
/// ```json
/// {
///   "version": 1,
///   "offsets": {
///     "orders": { "0": 42, "1": 7 }
///   }
/// }
/// ```
///
/// Each [`save`](CheckpointStore::save) writes the whole file to `<path>.tmp` in the same
/// directory, syncs it to disk, then renames it over `path`: a crash leaves either the old
/// file or the new one, never a mix. Loads are answered from memory (the file is read once, by
/// [`open`](Self::open)), so only one process at a time should use a given file.
#[derive(Debug)]
pub struct FileCheckpoints {
    path: PathBuf,
    cache: Mutex<Offsets>,
}

/// The file's contents. Partitions are strings because JSON object keys are.
#[derive(Serialize, Deserialize)]
struct FileContents {
    version: u32,
    offsets: BTreeMap<String, BTreeMap<String, i64>>,
}

/// The only version of the file format so far.
const FILE_VERSION: u32 = 1;

impl FileCheckpoints {
    /// Opens (or creates on first save) the file at `path`; loads what it holds.
    ///
    /// A missing file is an empty store (the file and its directory are created on the first
    /// save); an unreadable file is [`CheckpointError::Io`], a corrupt one
    /// [`CheckpointError::Corrupt`].
    pub fn open(path: impl Into<PathBuf>) -> Result<Self, CheckpointError> {
        let path = path.into();
        let cache = match fs::read_to_string(&path) {
            Ok(text) => parse(&path, &text)?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => Offsets::new(),
            Err(source) => return Err(CheckpointError::Io { path, source }),
        };
        Ok(Self {
            path,
            cache: Mutex::new(cache),
        })
    }

    /// The file this store reads and writes.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl CheckpointStore for FileCheckpoints {
    fn load(&self, topic: &str, partition: i32) -> Result<Option<i64>, CheckpointError> {
        Ok(lock(&self.cache)
            .get(&(topic.to_owned(), partition))
            .copied())
    }

    fn save(&self, offsets: &[(&str, i32, i64)]) -> Result<(), CheckpointError> {
        validate(offsets)?;
        if offsets.is_empty() {
            return Ok(());
        }
        // Held across the write, so concurrent saves are written one after the other.
        let mut cache = lock(&self.cache);
        let mut updated = cache.clone();
        apply(&mut updated, offsets);
        write_atomically(&self.path, &render(&self.path, &updated)?)?;
        *cache = updated; // only once the file holds it: a failed write changes nothing
        tracing::debug!(
            path = %self.path.display(),
            partitions = offsets.len(),
            "saved checkpoints"
        );
        Ok(())
    }
}

impl<T: CheckpointStore + ?Sized> CheckpointStore for Arc<T> {
    fn load(&self, topic: &str, partition: i32) -> Result<Option<i64>, CheckpointError> {
        (**self).load(topic, partition)
    }

    fn save(&self, offsets: &[(&str, i32, i64)]) -> Result<(), CheckpointError> {
        (**self).save(offsets)
    }
}

fn validate(offsets: &[(&str, i32, i64)]) -> Result<(), CheckpointError> {
    match offsets.iter().find(|(_, _, offset)| *offset < 0) {
        Some(&(topic, partition, offset)) => Err(CheckpointError::NegativeOffset {
            topic: topic.to_owned(),
            partition,
            offset,
        }),
        None => Ok(()),
    }
}

fn apply(map: &mut Offsets, offsets: &[(&str, i32, i64)]) {
    for &(topic, partition, offset) in offsets {
        map.insert((topic.to_owned(), partition), offset);
    }
}

/// Reads the file format (see [`FileCheckpoints`]).
fn parse(path: &Path, text: &str) -> Result<Offsets, CheckpointError> {
    let corrupt = |reason: String| CheckpointError::Corrupt {
        path: path.to_owned(),
        reason,
    };
    let contents: FileContents = serde_json::from_str(text).map_err(|e| corrupt(e.to_string()))?;
    if contents.version != FILE_VERSION {
        return Err(corrupt(format!(
            "unsupported version {} (expected {FILE_VERSION})",
            contents.version
        )));
    }
    let mut offsets = Offsets::new();
    for (topic, partitions) in contents.offsets {
        for (partition, offset) in partitions {
            let Ok(number) = partition.parse::<i32>() else {
                return Err(corrupt(format!(
                    "partition `{partition}` of topic `{topic}` is not a number"
                )));
            };
            if offset < 0 {
                return Err(corrupt(format!(
                    "offset {offset} of {topic}[{partition}] is negative"
                )));
            }
            offsets.insert((topic.clone(), number), offset);
        }
    }
    Ok(offsets)
}

/// Writes the file format (see [`FileCheckpoints`]).
fn render(path: &Path, offsets: &Offsets) -> Result<Vec<u8>, CheckpointError> {
    let mut contents = FileContents {
        version: FILE_VERSION,
        offsets: BTreeMap::new(),
    };
    for ((topic, partition), offset) in offsets {
        contents
            .offsets
            .entry(topic.clone())
            .or_default()
            .insert(partition.to_string(), *offset);
    }
    let mut bytes = serde_json::to_vec_pretty(&contents).map_err(|e| CheckpointError::Io {
        path: path.to_owned(),
        source: e.into(),
    })?;
    bytes.push(b'\n');
    Ok(bytes)
}

/// Replaces the file at `path` with `bytes`: writes `<path>.tmp`, syncs it, renames it over `path`.
fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), CheckpointError> {
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir).map_err(|source| CheckpointError::Io {
            path: dir.to_owned(),
            source,
        })?;
    }
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);

    let written = File::create(&tmp).and_then(|mut file| {
        file.write_all(bytes)?;
        file.sync_all()
    });
    let (result, failed_path) = match written {
        Ok(()) => (fs::rename(&tmp, path), path),
        Err(e) => (Err(e), tmp.as_path()),
    };
    result.map_err(|source| {
        let _ = fs::remove_file(&tmp); // best effort: don't leave a half-written file behind
        CheckpointError::Io {
            path: failed_path.to_owned(),
            source,
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    /// A fresh directory under the system's temporary directory, removed on drop.
    struct TempDir(PathBuf);

    impl TempDir {
        fn new(test: &str) -> Self {
            static NEXT: AtomicU32 = AtomicU32::new(0);
            let n = NEXT.fetch_add(1, Ordering::Relaxed);
            let dir = std::env::temp_dir().join(format!(
                "kafka-kit-checkpoint-{test}-{}-{n}",
                std::process::id()
            ));
            let _ = fs::remove_dir_all(&dir);
            fs::create_dir_all(&dir).unwrap();
            Self(dir)
        }

        fn join(&self, name: &str) -> PathBuf {
            self.0.join(name)
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    #[test]
    fn memory_round_trip() {
        let store = MemoryCheckpoints::new();
        store.save(&[("orders", 0, 42), ("orders", 1, 7)]).unwrap();
        store.save(&[("orders", 0, 43)]).unwrap();
        assert_eq!(store.load("orders", 0).unwrap(), Some(43));
        assert_eq!(store.load("orders", 1).unwrap(), Some(7));
        let expected = BTreeMap::from([
            (TopicPartition::new("orders", 0), 43),
            (TopicPartition::new("orders", 1), 7),
        ]);
        assert_eq!(store.snapshot(), expected);
    }

    #[test]
    fn unknown_partition_loads_as_none() {
        let dir = TempDir::new("unknown");
        let file = FileCheckpoints::open(dir.join("c.json")).unwrap();
        let memory = MemoryCheckpoints::new();
        for store in [&file as &dyn CheckpointStore, &memory] {
            store.save(&[("orders", 0, 42)]).unwrap();
            assert_eq!(store.load("orders", 1).unwrap(), None);
            assert_eq!(store.load("payments", 0).unwrap(), None);
        }
    }

    #[test]
    fn negative_offset_saves_nothing() {
        let dir = TempDir::new("negative");
        let path = dir.join("c.json");
        let file = FileCheckpoints::open(&path).unwrap();
        let memory = MemoryCheckpoints::new();
        for store in [&file as &dyn CheckpointStore, &memory] {
            let err = store
                .save(&[("orders", 0, 42), ("orders", 1, -1)])
                .unwrap_err();
            assert!(
                matches!(err, CheckpointError::NegativeOffset { ref topic, partition: 1, offset: -1 } if topic == "orders"),
                "{err:?}"
            );
            assert_eq!(store.load("orders", 0).unwrap(), None);
        }
        assert!(!path.exists());
        assert!(memory.snapshot().is_empty());
    }

    #[test]
    fn empty_save_does_nothing() {
        let dir = TempDir::new("empty");
        let path = dir.join("c.json");
        FileCheckpoints::open(&path).unwrap().save(&[]).unwrap();
        assert!(!path.exists());
    }

    #[test]
    fn file_round_trip_across_reopen() {
        let dir = TempDir::new("reopen");
        let path = dir.join("c.json");
        let store = FileCheckpoints::open(&path).unwrap();
        store.save(&[("orders", 0, 42), ("orders", 1, 7)]).unwrap();
        store.save(&[("payments", 3, 0)]).unwrap();
        drop(store);

        let store = FileCheckpoints::open(&path).unwrap();
        assert_eq!(store.path(), path);
        assert_eq!(store.load("orders", 0).unwrap(), Some(42));
        assert_eq!(store.load("orders", 1).unwrap(), Some(7));
        assert_eq!(store.load("payments", 3).unwrap(), Some(0));
    }

    #[test]
    fn file_has_the_documented_format() {
        let dir = TempDir::new("format");
        let path = dir.join("c.json");
        let store = FileCheckpoints::open(&path).unwrap();
        store.save(&[("orders", 0, 42), ("orders", 1, 7)]).unwrap();
        let text = fs::read_to_string(&path).unwrap();
        let json: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"version": 1, "offsets": {"orders": {"0": 42, "1": 7}}})
        );
        assert!(text.contains('\n'), "not pretty-printed: {text}");
    }

    #[test]
    fn save_leaves_no_tmp_file() {
        let dir = TempDir::new("tmp");
        let store = FileCheckpoints::open(dir.join("c.json")).unwrap();
        store.save(&[("orders", 0, 1)]).unwrap();
        store.save(&[("orders", 0, 2)]).unwrap();
        let names: Vec<_> = fs::read_dir(&dir.0)
            .unwrap()
            .map(|entry| entry.unwrap().file_name())
            .collect();
        assert_eq!(names, ["c.json"]);
    }

    #[test]
    fn failed_write_leaves_the_cache_unchanged() {
        let dir = TempDir::new("failed");
        let store = FileCheckpoints::open(dir.join("sub").join("c.json")).unwrap();
        store.save(&[("orders", 0, 1)]).unwrap();
        fs::remove_dir_all(dir.join("sub")).unwrap();
        fs::write(dir.join("sub"), "").unwrap(); // the directory is now a file: the write fails
        let err = store
            .save(&[("orders", 0, 42), ("orders", 1, 7)])
            .unwrap_err();
        assert!(matches!(err, CheckpointError::Io { .. }), "{err:?}");
        assert_eq!(store.load("orders", 0).unwrap(), Some(1));
        assert_eq!(store.load("orders", 1).unwrap(), None);
    }

    #[test]
    fn corrupt_file_is_an_error_naming_the_path() {
        let dir = TempDir::new("corrupt");
        let path = dir.join("c.json");
        for text in [
            "not json",
            r#"{"version":1,"offsets":{"orders":{"zero":42}}}"#,
            r#"{"version":1,"offsets":{"orders":{"0":-5}}}"#,
            r#"{"version":2,"offsets":{}}"#,
        ] {
            fs::write(&path, text).unwrap();
            let err = FileCheckpoints::open(&path).unwrap_err();
            match &err {
                CheckpointError::Corrupt { path: p, .. } => assert_eq!(p, &path, "{text}"),
                other => panic!("{text}: expected Corrupt, got {other:?}"),
            }
            assert!(err.to_string().contains(&*path.to_string_lossy()), "{err}");
        }
    }

    #[test]
    fn missing_file_opens_empty() {
        let dir = TempDir::new("missing");
        let store = FileCheckpoints::open(dir.join("c.json")).unwrap();
        assert_eq!(store.load("orders", 0).unwrap(), None);
        assert!(!dir.join("c.json").exists());
    }

    #[test]
    fn missing_directory_is_created_on_save() {
        let dir = TempDir::new("mkdir");
        let path = dir.join("a").join("b").join("c.json");
        let store = FileCheckpoints::open(&path).unwrap();
        store.save(&[("orders", 0, 42)]).unwrap();
        assert!(path.is_file());
        assert_eq!(
            FileCheckpoints::open(&path)
                .unwrap()
                .load("orders", 0)
                .unwrap(),
            Some(42)
        );
    }

    #[test]
    fn unusual_topic_names_round_trip() {
        let dir = TempDir::new("names");
        let path = dir.join("c.json");
        let topics = [
            "app.events.v2",
            "dead-letter_queue",
            "заказы",
            "注文",
            "\"quoted\" {json}",
        ];
        let store = FileCheckpoints::open(&path).unwrap();
        let offsets: Vec<_> = topics
            .iter()
            .enumerate()
            .map(|(i, t)| (*t, i as i32, i as i64 * 10))
            .collect();
        store.save(&offsets).unwrap();
        let store = FileCheckpoints::open(&path).unwrap();
        for (topic, partition, offset) in offsets {
            assert_eq!(
                store.load(topic, partition).unwrap(),
                Some(offset),
                "{topic}"
            );
        }
    }

    #[test]
    fn arc_is_a_store() {
        let shared = Arc::new(MemoryCheckpoints::new());
        let store: &dyn CheckpointStore = &shared;
        store.save(&[("orders", 2, 5)]).unwrap();
        assert_eq!(store.load("orders", 2).unwrap(), Some(5));
        assert_eq!(shared.snapshot().len(), 1);

        let erased: Arc<dyn CheckpointStore> = shared;
        let store: &dyn CheckpointStore = &erased;
        assert_eq!(store.load("orders", 2).unwrap(), Some(5));
    }
}
