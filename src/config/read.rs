//! Reading the config file: a regular file only, never more than the size limit, and never
//! blocking on what is not a file.
//!
//! The path is whatever an operator (or a ConfigMap) put there. A FIFO would block `open`
//! until a writer appears, `/dev/zero` reports size 0 and never ends, a directory fails
//! with an unhelpful message. So the file is opened with `O_NONBLOCK` (a FIFO opens at
//! once instead of waiting for a writer), the opened descriptor is checked to be a regular
//! file (`fstat`, so a symlink swapped between a check and the open cannot fool it), and the
//! read stops one byte past the limit whatever size the file claims.

use std::{
    fs::{File, FileType},
    io::Read,
    os::unix::fs::{FileTypeExt, OpenOptionsExt},
    path::Path,
};

use super::{ConfigError, ConfigErrors};

/// Reads the config file at `path` as UTF-8 text of at most
/// [`MAX_FILE_BYTES`](crate::model::limits::MAX_FILE_BYTES), with the path and the reason on
/// failure.
pub fn read(path: &Path) -> Result<String, ConfigErrors> {
    read_limited(path, crate::model::limits::MAX_FILE_BYTES)
        .map_err(|msg| ConfigErrors::single(path, ConfigError::new("", msg)))
}

/// Reads the regular file at `path` as UTF-8 text of at most `max` bytes, with the same
/// guards as [`read`]; the error says why, without the path. Also used for the health
/// state file.
pub fn read_limited(path: &Path, max: u64) -> Result<String, String> {
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)
        .map_err(|e| format!("cannot read file: {e}"))?;
    let meta = file
        .metadata()
        .map_err(|e| format!("cannot read file: {e}"))?;
    if !meta.is_file() {
        let via = match std::fs::read_link(path) {
            Ok(target) => format!(" (a symlink to {})", target.display()),
            Err(_) => String::new(),
        };
        return Err(format!(
            "cannot read file: it is {}{via}, not a regular file: only regular files are read",
            kind(meta.file_type())
        ));
    }
    let too_big = || format!("the file is larger than {max} bytes: at most {max} are read");
    if meta.len() > max {
        return Err(too_big());
    }
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    // The size reported is not trusted: a file that grows, or a special file some
    // filesystem reports as regular, still stops here.
    (&file as &File)
        .take(max + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| format!("cannot read file: {e}"))?;
    if bytes.len() as u64 > max {
        return Err(too_big());
    }
    String::from_utf8(bytes).map_err(|e| {
        format!(
            "cannot read file: not UTF-8 text (invalid byte at offset {})",
            e.utf8_error().valid_up_to()
        )
    })
}

/// What a file that is not a regular file is, for the error message.
fn kind(t: FileType) -> &'static str {
    if t.is_dir() {
        "a directory"
    } else if t.is_fifo() {
        "a FIFO (named pipe)"
    } else if t.is_char_device() {
        "a character device"
    } else if t.is_block_device() {
        "a block device"
    } else if t.is_socket() {
        "a socket"
    } else {
        "a special file"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mkfifo(path: &Path) {
        let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
        // SAFETY: a valid NUL-terminated path; mkfifo only reads it.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o644) }, 0);
    }

    #[test]
    fn only_regular_files_are_read_and_each_other_kind_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("fifo.toml");
        mkfifo(&fifo);
        // Opening a FIFO without a writer would block forever without O_NONBLOCK.
        let e = read_limited(&fifo, 100).unwrap_err();
        assert!(
            e.contains("it is a FIFO (named pipe), not a regular file"),
            "{e}"
        );
        let e = read_limited(dir.path(), 100).unwrap_err();
        assert!(e.contains("it is a directory"), "{e}");
        let zero = dir.path().join("zero.toml");
        std::os::unix::fs::symlink("/dev/zero", &zero).unwrap();
        let e = read_limited(&zero, 100).unwrap_err();
        assert!(
            e.contains("it is a character device (a symlink to /dev/zero)"),
            "{e}"
        );
        let e = read(&dir.path().join("missing.toml")).unwrap_err();
        assert!(
            e.to_string().contains("missing.toml: cannot read file"),
            "{e}"
        );
    }

    #[test]
    fn reads_stop_at_the_limit() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("gtmd.toml");
        std::fs::write(&path, "x".repeat(101)).unwrap();
        let e = read_limited(&path, 100).unwrap_err();
        assert!(e.contains("larger than 100 bytes"), "{e}");
        std::fs::write(&path, "x".repeat(100)).unwrap();
        assert_eq!(read_limited(&path, 100).unwrap().len(), 100);
        std::fs::write(&path, [b'a', 0xff]).unwrap();
        let e = read_limited(&path, 100).unwrap_err();
        assert!(
            e.contains("not UTF-8 text (invalid byte at offset 1)"),
            "{e}"
        );
    }
}
