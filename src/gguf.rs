//! GGUF headers, read defensively: the one place that parses a GGUF file's metadata and tensor
//! table, for the model loader and the tokenizer alike.

use std::path::Path;

use anyhow::{bail, Result};
use candle_core::quantized::gguf_file;

/// Parses a GGUF header, turning every failure (and any panic of the parser on hostile input)
/// into an error that names the file.
pub fn read_gguf_header<R: std::io::Read + std::io::Seek>(reader: &mut R, path: &Path) -> Result<gguf_file::Content> {
    let parsed = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| gguf_file::Content::read(reader)));
    let content = match parsed {
        Ok(Ok(c)) => c,
        Ok(Err(e)) => bail!("{}: not a valid GGUF file: {e}", path.display()),
        Err(_) => bail!("{}: not a valid GGUF file: the header is corrupt", path.display()),
    };
    let file_len = reader.seek(std::io::SeekFrom::End(0))?;
    for (name, info) in &content.tensor_infos {
        let elems = info.shape.dims().iter().try_fold(1u64, |a, &d| a.checked_mul(d as u64));
        let bytes = elems.and_then(|e| {
            let bs = info.ggml_dtype.block_size() as u64;
            (e % bs == 0).then(|| (e / bs).checked_mul(info.ggml_dtype.type_size() as u64)).flatten()
        });
        let end = bytes.and_then(|b| content.tensor_data_offset.checked_add(info.offset)?.checked_add(b));
        match end {
            Some(end) if end <= file_len => {}
            Some(end) => bail!(
                "{}: truncated GGUF file: tensor '{name}' ends at byte {end} but the file has {file_len} bytes",
                path.display()
            ),
            None => bail!(
                "{}: corrupt GGUF file: tensor '{name}' has an impossible shape {:?}",
                path.display(),
                info.shape.dims()
            ),
        }
    }
    Ok(content)
}
