//! Writing a state_dict as PyTorch's `torch.save` does since PyTorch 1.6 (the zip-based
//! format, serialization version 3): a zip archive (stored, members aligned to 64 bytes) of
//! `archive/data.pkl`, `archive/byteorder`, `archive/data/<n>` (one little-endian storage per
//! tensor) and `archive/version`. `data.pkl` is a protocol-2 pickle of a
//! `collections.OrderedDict` whose values are `torch._utils._rebuild_tensor_v2(storage, 0,
//! size, stride, False, OrderedDict())` with the storage as the persistent id `('storage',
//! torch.<Float|Long>Storage, '<n>', 'cpu', numel)`: only the globals
//! `torch.load(weights_only=True)` allows, so PyTorch loads the file with its safe unpickler.
//! Source followed: `torch/serialization.py` (`_save`, `_legacy_load`'s `persistent_load`) and
//! `caffe2/serialize/inline_container.cc`.

use std::io::{Cursor, Write};

/// The element type of a stored tensor.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum StorageKind {
    /// `torch.float32`, `torch.FloatStorage`.
    Float,
    /// `torch.int64`, `torch.LongStorage`.
    Long,
}

impl StorageKind {
    fn class(self) -> &'static str {
        match self {
            StorageKind::Float => "FloatStorage",
            StorageKind::Long => "LongStorage",
        }
    }
    fn element_size(self) -> usize {
        match self {
            StorageKind::Float => 4,
            StorageKind::Long => 8,
        }
    }
}

/// One tensor of the state_dict: its element type, shape and little-endian bytes.
pub(crate) struct Stored<'a> {
    pub kind: StorageKind,
    pub shape: &'a [usize],
    pub bytes: &'a [u8],
}

/// A protocol-2 pickle, written opcode by opcode.
struct Pickle(Vec<u8>);

impl Pickle {
    fn global(&mut self, module: &str, name: &str) {
        self.0.push(b'c');
        self.0.extend_from_slice(module.as_bytes());
        self.0.push(b'\n');
        self.0.extend_from_slice(name.as_bytes());
        self.0.push(b'\n');
    }
    fn string(&mut self, s: &str) {
        self.0.push(b'X'); // BINUNICODE
        self.0.extend_from_slice(&(s.len() as u32).to_le_bytes());
        self.0.extend_from_slice(s.as_bytes());
    }
    fn int(&mut self, v: usize) {
        match i32::try_from(v) {
            Ok(v) => {
                self.0.push(b'J'); // BININT
                self.0.extend_from_slice(&v.to_le_bytes());
            }
            Err(_) => {
                self.0.push(0x8a); // LONG1: 8 little-endian bytes, two's complement
                self.0.push(8);
                self.0.extend_from_slice(&(v as i64).to_le_bytes());
            }
        }
    }
    fn int_tuple(&mut self, values: &[usize]) {
        self.0.push(b'(');
        for &v in values {
            self.int(v);
        }
        self.0.push(b't');
    }
    /// `collections.OrderedDict()`.
    fn ordered_dict(&mut self) {
        self.global("collections", "OrderedDict");
        self.0.push(b')'); // EMPTY_TUPLE
        self.0.push(b'R'); // REDUCE
    }
    fn tensor(&mut self, key: usize, tensor: &Stored<'_>) {
        let numel: usize = tensor.shape.iter().product();
        let mut stride = vec![1usize; tensor.shape.len()];
        for i in (0..tensor.shape.len().saturating_sub(1)).rev() {
            stride[i] = stride[i + 1] * tensor.shape[i + 1];
        }
        self.global("torch._utils", "_rebuild_tensor_v2");
        self.0.push(b'(');
        // The storage, as a persistent id.
        self.0.push(b'(');
        self.string("storage");
        self.global("torch", tensor.kind.class());
        self.string(&key.to_string());
        self.string("cpu");
        self.int(numel);
        self.0.push(b't');
        self.0.push(b'Q'); // BINPERSID
        self.int(0); // storage offset
        self.int_tuple(tensor.shape);
        self.int_tuple(&stride);
        self.0.push(0x89); // NEWFALSE: requires_grad
        self.ordered_dict(); // backward hooks
        self.0.push(b't');
        self.0.push(b'R');
    }
}

/// The bytes of a `.pth` file holding `tensors` (in this order) as a state_dict.
pub(crate) fn pth_bytes(tensors: &[(String, Stored<'_>)]) -> std::io::Result<Vec<u8>> {
    let mut pickle = Pickle(vec![0x80, 2]); // PROTO 2
    pickle.ordered_dict();
    if !tensors.is_empty() {
        pickle.0.push(b'(');
        for (i, (name, tensor)) in tensors.iter().enumerate() {
            pickle.string(name);
            pickle.tensor(i, tensor);
        }
        pickle.0.push(b'u'); // SETITEMS
    }
    pickle.0.push(b'.'); // STOP

    let options = zip::write::SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Stored)
        .with_alignment(64);
    let mut zip = zip::ZipWriter::new(Cursor::new(Vec::new()));
    let member = |zip: &mut zip::ZipWriter<Cursor<Vec<u8>>>, name: &str, bytes: &[u8]| {
        zip.start_file(format!("archive/{name}"), options)
            .map_err(std::io::Error::other)?;
        zip.write_all(bytes)
    };
    member(&mut zip, "data.pkl", &pickle.0)?;
    member(&mut zip, "byteorder", b"little")?;
    for (i, (name, tensor)) in tensors.iter().enumerate() {
        let numel: usize = tensor.shape.iter().product();
        if tensor.bytes.len() != numel * tensor.kind.element_size() {
            return Err(std::io::Error::other(format!(
                "{name}: {} bytes for {numel} elements",
                tensor.bytes.len()
            )));
        }
        member(&mut zip, &format!("data/{i}"), tensor.bytes)?;
    }
    member(&mut zip, "version", b"3\n")?;
    let cursor = zip.finish().map_err(std::io::Error::other)?;
    Ok(cursor.into_inner())
}
