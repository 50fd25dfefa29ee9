//! The pickle allow-list of `torch.load(weights_only=True)`, after PyTorch's
//! `torch/_weights_only_unpickler.py`: a checkpoint may name only the globals that rebuild
//! tensors and their containers (`collections.OrderedDict`, `torch._utils._rebuild_tensor_v2`,
//! the `torch.*Storage` classes, dtypes, `torch.Size`, `torch.device`, ...). Any other global — a
//! pickled `nn.Module`, an optimizer class, `os.system` — makes the file refused, naming it.
//!
//! burn-store's reader never runs code from a pickle, so this is not what keeps a file from
//! executing anything: it keeps this crate from *accepting* what PyTorch itself would refuse
//! (and silently dropping entries it cannot represent). The scan walks the opcode stream of
//! every pickle the loader reads (`*/data.pkl` in the ZIP format, the `pickle` and `sys_info`
//! members of the pre-2018 TAR format, the five leading pickles of the legacy format, or a
//! plain pickle) with a shadow stack, so that `STACK_GLOBAL` is checked against the two strings
//! it really takes (pushed directly or fetched from the memo); one whose operands are not
//! known strings is refused too. Protocols 0 to 5; an opcode outside them is a corrupt file.
//!
//! Memory is bounded whatever the file: the shadow stack holds at most [`MAX_STACK`] entries,
//! strings longer than [`MAX_NAME`] bytes are skipped without being kept, and the memo keeps at
//! most [`MAX_MEMO_BYTES`] of strings: at most 2^18 entries of up to 256 bytes plus 16 MiB,
//! about 100 MiB at most. Nothing is allocated from a length
//! the file declares.

use std::collections::HashMap;
use std::io::{self, BufRead, BufReader, Read};
use std::path::Path;

/// Largest `data.pkl` scanned (burn-store's reader refuses larger ones too): 100 MiB.
pub const MAX_PICKLE: u64 = 100 * 1024 * 1024;
/// Deepest shadow stack accepted (a real state_dict needs a few thousand entries).
pub const MAX_STACK: usize = 1 << 18;
/// Longest string kept as a possible module or global name; longer ones are skipped.
pub const MAX_NAME: usize = 256;
/// Bytes of memoised strings kept (each entry charged its length plus 32).
pub const MAX_MEMO_BYTES: usize = 16 * 1024 * 1024;
/// Distinct refused globals remembered for the error.
const MAX_REFUSED: usize = 1000;

/// Why a file could not be scanned.
#[derive(Debug)]
pub(crate) enum ScanError {
    /// Reading the file failed.
    Io(io::Error),
    /// The container or a pickle is malformed.
    Corrupt(String),
}

impl From<io::Error> for ScanError {
    fn from(e: io::Error) -> Self {
        if e.kind() == io::ErrorKind::UnexpectedEof {
            ScanError::Corrupt("the pickle ends before its STOP opcode".into())
        } else {
            ScanError::Io(e)
        }
    }
}

fn corrupt<T>(reason: impl Into<String>) -> Result<T, ScanError> {
    Err(ScanError::Corrupt(reason.into()))
}

/// Globals a checkpoint names that `torch.load(weights_only=True)` refuses, distinct and in
/// order of first appearance (at most [`MAX_REFUSED`]).
#[derive(Debug, Default)]
pub(crate) struct Refused(pub Vec<String>);

impl Refused {
    fn add(&mut self, name: String) {
        if self.0.len() < MAX_REFUSED && !self.0.contains(&name) {
            self.0.push(name);
        }
    }
}

/// Whether `module.name` is on PyTorch's `weights_only` allow-list.
pub fn is_allowed(module: &str, name: &str) -> bool {
    const REBUILD: [&str; 11] = [
        "_rebuild_parameter",
        "_rebuild_parameter_with_state",
        "_rebuild_qtensor",
        "_rebuild_tensor",
        "_rebuild_tensor_v2",
        "_rebuild_tensor_v3",
        "_rebuild_sparse_tensor",
        "_rebuild_meta_tensor_no_storage",
        "_rebuild_wrapper_subclass",
        "_rebuild_device_tensor_from_numpy",
        "_rebuild_device_tensor_from_cpu_tensor",
    ];
    match module {
        "collections" => matches!(name, "OrderedDict" | "Counter"),
        "torch._utils" => REBUILD.contains(&name),
        "torch._tensor" => name == "_rebuild_from_type_v2",
        "torch.nn.parameter" => name == "Parameter",
        "torch.serialization" => name == "_get_layout",
        "torch.storage" => matches!(name, "TypedStorage" | "UntypedStorage"),
        "_codecs" => name == "encode",
        // Python 2 pickles name `builtins` `__builtin__` (PyTorch maps it).
        "builtins" | "__builtin__" => matches!(name, "bytearray" | "set" | "complex"),
        "torch" => {
            matches!(name, "Size" | "Tensor" | "device")
                || is_storage_class(name)
                || is_tensor_class(name)
                || is_dtype(name)
                || matches!(
                    name,
                    "per_tensor_affine"
                        | "per_tensor_symmetric"
                        | "per_channel_affine"
                        | "per_channel_symmetric"
                        | "per_channel_affine_float_qparams"
                )
        }
        "torch.cuda" => is_storage_class(name) || is_tensor_class(name),
        "torch.sparse" | "torch.cuda.sparse" => is_tensor_class(name),
        _ => false,
    }
}

/// `torch._storage_classes` (legacy typed storages, `torch.FloatStorage`, ...).
fn is_storage_class(name: &str) -> bool {
    matches!(
        name,
        "UntypedStorage"
            | "TypedStorage"
            | "DoubleStorage"
            | "FloatStorage"
            | "LongStorage"
            | "IntStorage"
            | "ShortStorage"
            | "CharStorage"
            | "ByteStorage"
            | "HalfStorage"
            | "BoolStorage"
            | "BFloat16Storage"
            | "ComplexFloatStorage"
            | "ComplexDoubleStorage"
            | "QUInt8Storage"
            | "QInt8Storage"
            | "QInt32Storage"
            | "QUInt4x2Storage"
            | "QUInt2x4Storage"
    )
}

/// `torch._tensor_classes` (legacy tensor types, `torch.FloatTensor`, ...).
fn is_tensor_class(name: &str) -> bool {
    matches!(
        name,
        "DoubleTensor"
            | "FloatTensor"
            | "LongTensor"
            | "IntTensor"
            | "ShortTensor"
            | "CharTensor"
            | "ByteTensor"
            | "HalfTensor"
            | "BoolTensor"
            | "BFloat16Tensor"
    )
}

/// The canonical names `str(dtype)` gives (`torch.float32`, ...).
fn is_dtype(name: &str) -> bool {
    let sized = |prefix: &str| {
        name.strip_prefix(prefix)
            .is_some_and(|bits| matches!(bits, "1" | "2" | "3" | "4" | "5" | "6" | "7"))
    };
    sized("int")
        || sized("uint")
        || matches!(
            name,
            "float64"
                | "float32"
                | "float16"
                | "bfloat16"
                | "complex32"
                | "complex64"
                | "complex128"
                | "int64"
                | "int32"
                | "int16"
                | "int8"
                | "uint8"
                | "uint16"
                | "uint32"
                | "uint64"
                | "bool"
                | "qint8"
                | "quint8"
                | "qint32"
                | "quint4x2"
                | "quint2x4"
                | "float8_e5m2"
                | "float8_e4m3fn"
                | "float8_e5m2fnuz"
                | "float8_e4m3fnuz"
                | "float8_e8m0fnu"
                | "float4_e2m1fn_x2"
                | "bits8"
                | "bits16"
                | "bits1x8"
                | "bits2x4"
                | "bits4x2"
        )
}

/// The legacy format's magic number as protocol 2+ writes it (a `LONG1`), and as protocols
/// 0/1 write it (decimal text); the same detection burn-store's reader uses.
const LEGACY_MAGIC_BYTES: [u8; 10] = [0x6c, 0xfc, 0x9c, 0x46, 0xf9, 0x20, 0x6a, 0xa8, 0x50, 0x19];
const LEGACY_MAGIC_TEXT: &[u8] = b"119547037146038801333356";

/// Scans every pickle of a PyTorch checkpoint (any container) for refused globals. Only a
/// failure to read the file itself is [`ScanError::Io`]; an error the ZIP or TAR layer raises
/// about the bytes it read is damaged data ([`ScanError::Corrupt`]).
pub(crate) fn scan_file(path: &Path) -> Result<Refused, ScanError> {
    let failure = crate::fsutil::ReadFailure::default();
    scan_containers(path, &failure).map_err(|e| match e {
        ScanError::Io(e) if !failure.happened() => ScanError::Corrupt(e.to_string()),
        other => other,
    })
}

fn scan_containers(
    path: &Path,
    failure: &crate::fsutil::ReadFailure,
) -> Result<Refused, ScanError> {
    let mut header = Vec::with_capacity(262);
    failure.open(path)?.take(262).read_to_end(&mut header)?;
    let mut refused = Refused::default();
    if header.starts_with(b"PK\x03\x04") || header.starts_with(b"PK\x05\x06") {
        scan_zip(path, failure, &mut refused)?;
    } else if header.get(257..262) == Some(b"ustar") {
        scan_tar(path, failure, &mut refused)?;
    } else {
        let window = &header[..header.len().min(64)];
        let legacy = window
            .windows(LEGACY_MAGIC_BYTES.len())
            .any(|w| w == LEGACY_MAGIC_BYTES)
            || window
                .windows(LEGACY_MAGIC_TEXT.len())
                .any(|w| w == LEGACY_MAGIC_TEXT);
        let mut reader = BufReader::new(failure.open(path)?);
        // Legacy: magic, protocol version, sys_info, the saved object, the storage keys; the
        // storages' raw bytes follow.
        for _ in 0..if legacy { 5 } else { 1 } {
            scan_pickle(&mut reader, &mut refused)?;
        }
    }
    Ok(refused)
}

fn scan_zip(
    path: &Path,
    failure: &crate::fsutil::ReadFailure,
    refused: &mut Refused,
) -> Result<(), ScanError> {
    let zip_error = |e: zip::result::ZipError| match e {
        zip::result::ZipError::Io(e) => ScanError::from(e),
        other => ScanError::Corrupt(format!("not a readable ZIP archive: {other}")),
    };
    let mut archive =
        zip::ZipArchive::new(BufReader::new(failure.open(path)?)).map_err(zip_error)?;
    // Every entry named like a `data.pkl`, not only the one the reader picks.
    let mut pickles = Vec::new();
    for index in 0..archive.len() {
        let entry = archive.by_index_raw(index).map_err(zip_error)?;
        let name = entry.name_raw();
        if name == b"data.pkl" || name.ends_with(b"/data.pkl") {
            pickles.push(index);
        }
    }
    if pickles.is_empty() {
        return corrupt("a ZIP archive without a data.pkl entry");
    }
    for index in pickles {
        let entry = archive.by_index(index).map_err(zip_error)?;
        if entry.size() > MAX_PICKLE {
            return corrupt(format!(
                "its data.pkl declares {} bytes, more than the {MAX_PICKLE} accepted",
                entry.size()
            ));
        }
        scan_pickle(&mut BufReader::new(entry.take(MAX_PICKLE)), refused)?;
    }
    Ok(())
}

fn scan_tar(
    path: &Path,
    failure: &crate::fsutil::ReadFailure,
    refused: &mut Refused,
) -> Result<(), ScanError> {
    let mut archive = tar::Archive::new(BufReader::new(failure.open(path)?));
    let mut seen_pickle = false;
    for entry in archive.entries()? {
        let entry = entry?;
        let name = entry
            .path()?
            .to_string_lossy()
            .trim_start_matches("./")
            .to_string();
        if matches!(name.as_str(), "pickle" | "sys_info") {
            seen_pickle |= name == "pickle";
            scan_pickle(&mut BufReader::new(entry.take(MAX_PICKLE)), refused)?;
        }
    }
    if !seen_pickle {
        return corrupt("a TAR checkpoint without its 'pickle' member");
    }
    Ok(())
}

/// A shadow-stack value: only strings short enough to be names are kept.
#[derive(Clone, Debug)]
enum V {
    Mark,
    Str(Box<str>),
    Other,
}

struct Walker {
    stack: Vec<V>,
    memo: HashMap<u64, Box<str>>,
    memo_bytes: usize,
    /// MEMOIZE's next index (CPython: the memo's length).
    memo_len: u64,
    /// Which memo opcodes were seen: MEMOIZE, and PUT/BINPUT/LONG_BINPUT. A pickle mixing
    /// them gets memo indices this walker does not track exactly, so its memo is then
    /// treated as unknown (a STACK_GLOBAL built from it is refused).
    memoize_seen: bool,
    put_seen: bool,
}

impl Walker {
    fn push(&mut self, v: V) -> Result<(), ScanError> {
        if self.stack.len() >= MAX_STACK {
            return corrupt(format!("its pickle stack exceeds {MAX_STACK} entries"));
        }
        self.stack.push(v);
        Ok(())
    }

    fn pop(&mut self) -> Result<V, ScanError> {
        match self.stack.pop() {
            Some(V::Mark) | None => corrupt("pickle stack underflow"),
            Some(v) => Ok(v),
        }
    }

    fn pop_n(&mut self, n: usize) -> Result<(), ScanError> {
        for _ in 0..n {
            self.pop()?;
        }
        Ok(())
    }

    fn pop_mark(&mut self) -> Result<(), ScanError> {
        loop {
            match self.stack.pop() {
                Some(V::Mark) => return Ok(()),
                Some(_) => {}
                None => return corrupt("pickle MARK missing"),
            }
        }
    }

    fn top(&self) -> Result<&V, ScanError> {
        match self.stack.last() {
            Some(V::Mark) | None => corrupt("pickle stack underflow"),
            Some(v) => Ok(v),
        }
    }

    fn put(&mut self, index: u64) -> Result<(), ScanError> {
        let value = self.top()?.clone();
        if let Some(old) = self.memo.remove(&index) {
            self.memo_bytes -= old.len() + 32;
        }
        if let V::Str(s) = value
            && self.memo_bytes + s.len() + 32 <= MAX_MEMO_BYTES
        {
            self.memo_bytes += s.len() + 32;
            self.memo.insert(index, s);
        }
        Ok(())
    }

    fn get(&mut self, index: u64) -> Result<(), ScanError> {
        let value = match self.memo.get(&index) {
            Some(s) if !(self.memoize_seen && self.put_seen) => V::Str(s.clone()),
            _ => V::Other,
        };
        self.push(value)
    }
}

fn read_array<const N: usize>(r: &mut impl BufRead) -> Result<[u8; N], ScanError> {
    let mut buf = [0u8; N];
    r.read_exact(&mut buf)?;
    Ok(buf)
}

/// Reads `len` bytes, keeping them only when they could be a name.
fn read_counted(r: &mut impl BufRead, len: u64) -> Result<Option<Vec<u8>>, ScanError> {
    if len <= MAX_NAME as u64 {
        let mut buf = vec![0u8; len as usize];
        r.read_exact(&mut buf)?;
        Ok(Some(buf))
    } else {
        let skipped = io::copy(&mut r.take(len), &mut io::sink())?;
        if skipped < len {
            return corrupt("the pickle ends inside a string");
        }
        Ok(None)
    }
}

/// Reads a `\n`-terminated argument, keeping at most [`MAX_NAME`] bytes of it (`None` when
/// longer).
fn read_line(r: &mut impl BufRead) -> Result<Option<Vec<u8>>, ScanError> {
    let mut kept = Vec::new();
    let mut too_long = false;
    loop {
        let (done, used) = {
            let buf = r.fill_buf()?;
            if buf.is_empty() {
                return corrupt("the pickle ends inside a text argument");
            }
            match buf.iter().position(|&b| b == b'\n') {
                Some(end) => {
                    if kept.len() + end <= MAX_NAME {
                        kept.extend_from_slice(&buf[..end]);
                    } else {
                        too_long = true;
                    }
                    (true, end + 1)
                }
                None => {
                    if kept.len() + buf.len() <= MAX_NAME {
                        kept.extend_from_slice(buf);
                    } else {
                        too_long = true;
                    }
                    (false, buf.len())
                }
            }
        };
        r.consume(used);
        if done {
            return Ok((!too_long).then_some(kept));
        }
    }
}

fn name_value(bytes: Option<Vec<u8>>) -> V {
    match bytes.map(String::from_utf8) {
        Some(Ok(s)) => V::Str(s.into_boxed_str()),
        _ => V::Other,
    }
}

fn check_global(refused: &mut Refused, module: &str, name: &str) {
    if !is_allowed(module, name) {
        refused.add(format!("{module}.{name}"));
    }
}

fn lossy(bytes: Option<Vec<u8>>) -> String {
    match bytes {
        Some(b) => String::from_utf8_lossy(&b).into_owned(),
        None => format!("<a name over {MAX_NAME} bytes>"),
    }
}

/// Walks one pickle (up to and including its STOP), recording refused globals.
fn scan_pickle(r: &mut impl BufRead, refused: &mut Refused) -> Result<(), ScanError> {
    let mut w = Walker {
        stack: Vec::new(),
        memo: HashMap::new(),
        memo_bytes: 0,
        memo_len: 0,
        memoize_seen: false,
        put_seen: false,
    };
    loop {
        let [op] = read_array::<1>(r)?;
        match op {
            // --- arguments as text lines (protocol 0) ---
            b'c' | b'i' => {
                // GLOBAL pushes module.name; INST also instantiates it from the items above
                // the last MARK.
                let module = lossy(read_line(r)?);
                let name = lossy(read_line(r)?);
                check_global(refused, &module, &name);
                if op == b'i' {
                    w.pop_mark()?;
                }
                w.push(V::Other)?;
            }
            b'I' | b'L' | b'F' | b'P' => {
                read_line(r)?;
                w.push(V::Other)?;
            }
            b'S' => {
                // A quoted repr; only a plain 'name' is kept as a string.
                let line = read_line(r)?;
                let inner = line.as_deref().and_then(|l| {
                    let l = l.strip_suffix(b"\r").unwrap_or(l);
                    let quoted = (l.starts_with(b"'") && l.ends_with(b"'"))
                        || (l.starts_with(b"\"") && l.ends_with(b"\""));
                    (quoted && l.len() >= 2 && !l.contains(&b'\\'))
                        .then(|| l[1..l.len() - 1].to_vec())
                });
                w.push(name_value(inner))?;
            }
            b'V' => {
                // Raw-unicode-escape: kept only without escapes.
                let line = read_line(r)?.filter(|l| !l.contains(&b'\\'));
                w.push(name_value(line))?;
            }
            b'g' | b'p' => {
                let line = read_line(r)?.unwrap_or_default();
                let index = std::str::from_utf8(&line)
                    .ok()
                    .and_then(|s| s.trim().parse::<u64>().ok());
                let Some(index) = index else {
                    return corrupt("a pickle GET/PUT with an invalid index");
                };
                if op == b'g' {
                    w.get(index)?;
                } else {
                    w.put_seen = true;
                    w.put(index)?;
                }
            }
            // --- fixed-size arguments ---
            b'J' => {
                read_array::<4>(r)?;
                w.push(V::Other)?;
            }
            b'K' => {
                read_array::<1>(r)?;
                w.push(V::Other)?;
            }
            b'M' => {
                read_array::<2>(r)?;
                w.push(V::Other)?;
            }
            b'G' => {
                read_array::<8>(r)?;
                w.push(V::Other)?;
            }
            b'h' => {
                let [i] = read_array::<1>(r)?;
                w.get(u64::from(i))?;
            }
            b'j' => {
                let i = u32::from_le_bytes(read_array::<4>(r)?);
                w.get(u64::from(i))?;
            }
            b'q' => {
                let [i] = read_array::<1>(r)?;
                w.put_seen = true;
                w.put(u64::from(i))?;
            }
            b'r' => {
                let i = u32::from_le_bytes(read_array::<4>(r)?);
                w.put_seen = true;
                w.put(u64::from(i))?;
            }
            0x94 => {
                // MEMOIZE: the next memo index is the memo's length, as in CPython.
                let index = w.memo_len;
                w.memoize_seen = true;
                w.put(index)?;
                w.memo_len += 1;
            }
            0x80 => {
                let [protocol] = read_array::<1>(r)?;
                if protocol > 5 {
                    return corrupt(format!("unsupported pickle protocol {protocol}"));
                }
            }
            0x95 => {
                read_array::<8>(r)?;
            }
            0x82..=0x84 => {
                // EXT1/2/4: a global looked up in copyreg's extension registry.
                let code = match op {
                    0x82 => u32::from(read_array::<1>(r)?[0]),
                    0x83 => u32::from(u16::from_le_bytes(read_array::<2>(r)?)),
                    _ => u32::from_le_bytes(read_array::<4>(r)?),
                };
                refused.add(format!("copyreg extension code {code}"));
                w.push(V::Other)?;
            }
            // --- length-prefixed arguments ---
            0x8a => {
                let [len] = read_array::<1>(r)?;
                read_counted(r, u64::from(len))?;
                w.push(V::Other)?;
            }
            0x8b => {
                let len = i32::from_le_bytes(read_array::<4>(r)?);
                let Ok(len) = u64::try_from(len) else {
                    return corrupt("a negative LONG4 length");
                };
                read_counted(r, len)?;
                w.push(V::Other)?;
            }
            b'T' => {
                let len = i32::from_le_bytes(read_array::<4>(r)?);
                let Ok(len) = u64::try_from(len) else {
                    return corrupt("a negative BINSTRING length");
                };
                let bytes = read_counted(r, len)?;
                w.push(name_value(bytes))?;
            }
            b'U' | 0x8c => {
                let [len] = read_array::<1>(r)?;
                let bytes = read_counted(r, u64::from(len))?;
                w.push(name_value(bytes))?;
            }
            b'X' => {
                let len = u32::from_le_bytes(read_array::<4>(r)?);
                let bytes = read_counted(r, u64::from(len))?;
                w.push(name_value(bytes))?;
            }
            0x8d => {
                let len = u64::from_le_bytes(read_array::<8>(r)?);
                let bytes = read_counted(r, len)?;
                w.push(name_value(bytes))?;
            }
            b'B' => {
                let len = u32::from_le_bytes(read_array::<4>(r)?);
                read_counted(r, u64::from(len))?;
                w.push(V::Other)?;
            }
            b'C' => {
                let [len] = read_array::<1>(r)?;
                read_counted(r, u64::from(len))?;
                w.push(V::Other)?;
            }
            0x8e | 0x96 => {
                let len = u64::from_le_bytes(read_array::<8>(r)?);
                read_counted(r, len)?;
                w.push(V::Other)?;
            }
            // --- no argument ---
            b'.' => return Ok(()),
            b'(' => w.push(V::Mark)?,
            b'0' => {
                // POP also discards a MARK (CPython pops the metastack then).
                if w.stack.pop().is_none() {
                    return corrupt("pickle stack underflow");
                }
            }
            b'1' => w.pop_mark()?,
            b'2' => {
                let top = w.top()?.clone();
                w.push(top)?;
            }
            b'N' | 0x88 | 0x89 | b')' | b']' | b'}' | 0x8f | 0x97 => w.push(V::Other)?,
            b'R' | 0x81 => {
                // REDUCE (callable, args) and NEWOBJ (class, args) -> object.
                w.pop_n(2)?;
                w.push(V::Other)?;
            }
            0x92 => {
                w.pop_n(3)?;
                w.push(V::Other)?;
            }
            b'b' | b'a' => {
                w.pop()?;
                w.top()?;
            }
            b's' => {
                w.pop_n(2)?;
                w.top()?;
            }
            b'e' | b'u' | 0x90 => {
                w.pop_mark()?;
                w.top()?;
            }
            b'd' | b'l' | b't' | 0x91 | b'o' => {
                w.pop_mark()?;
                w.push(V::Other)?;
            }
            0x85..=0x87 => {
                w.pop_n(usize::from(op - 0x84))?;
                w.push(V::Other)?;
            }
            b'Q' | 0x98 => {
                w.pop()?;
                w.push(V::Other)?;
            }
            0x93 => {
                // STACK_GLOBAL: module and name are the two strings on top of the stack.
                let name = w.pop()?;
                let module = w.pop()?;
                match (module, name) {
                    (V::Str(module), V::Str(name)) => check_global(refused, &module, &name),
                    _ => refused
                        .add("a STACK_GLOBAL whose module and name are not plain strings".into()),
                }
                w.push(V::Other)?;
            }
            other => return corrupt(format!("invalid pickle opcode 0x{other:02x}")),
        }
    }
}

/// Formats at most `shown` names, then "and N more": keeps every message short.
pub(crate) fn short_list(items: &[String], shown: usize) -> String {
    let mut out: Vec<String> = items.iter().take(shown).cloned().collect();
    if items.len() > shown {
        out.push(format!("and {} more", items.len() - shown));
    }
    out.join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scan(bytes: &[u8]) -> Result<Vec<String>, ScanError> {
        let mut refused = Refused::default();
        scan_pickle(&mut io::Cursor::new(bytes), &mut refused)?;
        Ok(refused.0)
    }

    #[test]
    fn globals_are_checked_against_the_allow_list() {
        // pickle.dumps(collections.OrderedDict(), protocol=2)
        let ok = b"\x80\x02ccollections\nOrderedDict\nq\x00)Rq\x01.";
        assert!(scan(ok).unwrap().is_empty());
        let evil = b"\x80\x02cposix\nsystem\nq\x00X\x02\x00\x00\x00idq\x01\x85q\x02Rq\x03.";
        assert_eq!(scan(evil).unwrap(), ["posix.system"]);
    }

    #[test]
    fn stack_global_is_resolved_through_pushes_and_the_memo() {
        // Protocol 4: SHORT_BINUNICODE 'os', MEMOIZE, SHORT_BINUNICODE 'system', MEMOIZE,
        // STACK_GLOBAL, then again from the memo (BINGET 0, BINGET 1).
        let direct = b"\x80\x04\x8c\x02os\x94\x8c\x06system\x94\x93\x94.";
        assert_eq!(scan(direct).unwrap(), ["os.system"]);
        let memo = b"\x80\x04\x8c\x02os\x94\x8c\x06system\x94\x93\x94h\x00h\x01\x93.";
        assert_eq!(scan(memo).unwrap(), ["os.system"]);
        let allowed = b"\x80\x04\x8c\x0bcollections\x94\x8c\x0bOrderedDict\x94\x93\x94).";
        assert!(scan(allowed).unwrap().is_empty());
        // An int where the module should be: unresolvable, refused.
        let unknown = b"\x80\x04K\x01\x8c\x06system\x93.";
        assert_eq!(scan(unknown).unwrap().len(), 1);
    }

    #[test]
    fn malformed_pickles_are_errors_not_panics() {
        for bad in [
            &b""[..],
            b"\x80\x02",
            b"\x80\x02cos\n",
            b"\x80\x02X\xff\xff\xff\xffab",
            b"\x80\x02\xff",
            b"\x80\x02R.",
            b"\x80\x02\x93.",
            b"\x80\x02e.",
        ] {
            assert!(
                matches!(scan(bad), Err(ScanError::Corrupt(_))),
                "{bad:?}: {:?}",
                scan(bad)
            );
        }
    }
}
