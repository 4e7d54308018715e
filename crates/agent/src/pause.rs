//! The pause image: what holds an `awsvpc` task's network namespace, as in ECS's agent.
//!
//! ECS's agent ships its pause image as a tarball and loads it, so that no registry is ever
//! needed. Gantry does the same without even shipping a file: it generates, in memory, a tiny
//! static ELF executable that sleeps forever (x86_64: `loop { pause() }`; aarch64:
//! `loop { ppoll(NULL, 0, NULL, NULL) }`, hand-assembled behind a minimal ELF64 header and one
//! `PT_LOAD` program header), wraps it in a one-file tar archive (`/pause`, mode 0755) and
//! `docker import`s it as [`PAUSE_IMAGE`] with `CMD ["/pause"]`.
//!
//! [`PauseImage::ensure`] makes sure the image exists, once per agent process: it inspects
//! first and imports only when the image is missing; runners that race wait for the first
//! attempt (a failed attempt is retried by the next caller). The agent starts it in the
//! background as soon as Docker answers, so the first awsvpc task does not pay for it.
//!
//! The executable is PID 1 of its container and installs no signal handler: the kernel never
//! delivers a default-action signal such as SIGTERM to a namespace's init from inside, so
//! `docker stop` would wait out its whole timeout. The pause container is always removed with
//! `remove --force` (SIGKILL) instead.

use std::sync::Arc;
use tokio::sync::OnceCell;

use crate::docker::{DockerDriver, DockerError};

/// The repository of the locally built pause image.
pub const PAUSE_REPO: &str = "gantry/pause";
/// Its tag: bumped whenever the executable or the image's configuration changes, so that an
/// engine keeping an older build gets the new one.
pub const PAUSE_TAG: &str = "1";
/// `gantry/pause:1`.
pub const PAUSE_IMAGE: &str = "gantry/pause:1";
/// The path of the executable inside the image.
pub const PAUSE_PATH: &str = "/pause";

/// Where the single `PT_LOAD` segment (the whole file) is mapped.
const LOAD_ADDR: u64 = 0x40_0000;
const EHDR_SIZE: usize = 64;
const PHDR_SIZE: usize = 56;

/// The CPU architectures a pause executable can be generated for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arch {
    X86_64,
    Aarch64,
}

impl Arch {
    /// From Docker's (`amd64`, `arm64`) or Rust's (`x86_64`, `aarch64`) spelling.
    pub fn parse(name: &str) -> Option<Arch> {
        match name.trim().to_ascii_lowercase().as_str() {
            "amd64" | "x86_64" | "x86-64" => Some(Arch::X86_64),
            "arm64" | "aarch64" | "arm64/v8" => Some(Arch::Aarch64),
            _ => None,
        }
    }

    /// `e_machine`: EM_X86_64 (62) or EM_AARCH64 (183).
    pub fn elf_machine(self) -> u16 {
        match self {
            Arch::X86_64 => 62,
            Arch::Aarch64 => 183,
        }
    }

    /// Segment alignment: the largest page size the architecture's kernels use.
    fn page_align(self) -> u64 {
        match self {
            Arch::X86_64 => 0x1000,
            Arch::Aarch64 => 0x1_0000,
        }
    }

    /// The machine code: an endless loop around one blocking system call.
    pub fn code(self) -> Vec<u8> {
        match self {
            // loop:
            //   mov eax, 34      ; __NR_pause
            //   syscall
            //   jmp loop         ; rel8 -9
            Arch::X86_64 => vec![0xb8, 0x22, 0x00, 0x00, 0x00, 0x0f, 0x05, 0xeb, 0xf7],
            // loop:
            //   movz x0, #0      ; fds = NULL
            //   movz x1, #0      ; nfds = 0
            //   movz x2, #0      ; timeout = NULL (forever)
            //   movz x3, #0      ; sigmask = NULL
            //   movz x8, #73     ; __NR_ppoll
            //   svc  #0
            //   b    loop        ; imm26 -6
            Arch::Aarch64 => [
                0xd280_0000u32,
                0xd280_0001,
                0xd280_0002,
                0xd280_0003,
                0xd280_0928,
                0xd400_0001,
                0x17ff_fffa,
            ]
            .iter()
            .flat_map(|w| w.to_le_bytes())
            .collect(),
        }
    }
}

/// A minimal static ELF64 executable for `arch` that sleeps forever: the ELF header, one
/// `PT_LOAD` program header mapping the whole file read+execute at 0x400000, then the code
/// (the entry point). No sections, no interpreter, no libc.
pub fn pause_elf(arch: Arch) -> Vec<u8> {
    let code = arch.code();
    let headers = (EHDR_SIZE + PHDR_SIZE) as u64;
    let size = headers + code.len() as u64;
    let mut b = Vec::with_capacity(size as usize);
    // e_ident: magic, ELFCLASS64, ELFDATA2LSB, EV_CURRENT, ELFOSABI_SYSV, padding.
    b.extend_from_slice(&[0x7f, b'E', b'L', b'F', 2, 1, 1, 0]);
    b.extend_from_slice(&[0; 8]);
    b.extend_from_slice(&2u16.to_le_bytes()); // e_type: ET_EXEC
    b.extend_from_slice(&arch.elf_machine().to_le_bytes()); // e_machine
    b.extend_from_slice(&1u32.to_le_bytes()); // e_version
    b.extend_from_slice(&(LOAD_ADDR + headers).to_le_bytes()); // e_entry
    b.extend_from_slice(&(EHDR_SIZE as u64).to_le_bytes()); // e_phoff
    b.extend_from_slice(&0u64.to_le_bytes()); // e_shoff
    b.extend_from_slice(&0u32.to_le_bytes()); // e_flags
    b.extend_from_slice(&(EHDR_SIZE as u16).to_le_bytes()); // e_ehsize
    b.extend_from_slice(&(PHDR_SIZE as u16).to_le_bytes()); // e_phentsize
    b.extend_from_slice(&1u16.to_le_bytes()); // e_phnum
    b.extend_from_slice(&64u16.to_le_bytes()); // e_shentsize
    b.extend_from_slice(&0u16.to_le_bytes()); // e_shnum
    b.extend_from_slice(&0u16.to_le_bytes()); // e_shstrndx
    debug_assert_eq!(b.len(), EHDR_SIZE);
    // The program header.
    b.extend_from_slice(&1u32.to_le_bytes()); // p_type: PT_LOAD
    b.extend_from_slice(&5u32.to_le_bytes()); // p_flags: PF_R | PF_X
    b.extend_from_slice(&0u64.to_le_bytes()); // p_offset
    b.extend_from_slice(&LOAD_ADDR.to_le_bytes()); // p_vaddr
    b.extend_from_slice(&LOAD_ADDR.to_le_bytes()); // p_paddr
    b.extend_from_slice(&size.to_le_bytes()); // p_filesz
    b.extend_from_slice(&size.to_le_bytes()); // p_memsz
    b.extend_from_slice(&arch.page_align().to_le_bytes()); // p_align
    debug_assert_eq!(b.len(), EHDR_SIZE + PHDR_SIZE);
    b.extend_from_slice(&code);
    b
}

/// A ustar archive holding one regular file `name` (relative, under 100 bytes) owned by root
/// with permissions `mode`, followed by the two zero blocks that end an archive.
pub fn tar_one_file(name: &str, mode: u32, data: &[u8]) -> Vec<u8> {
    let mut h = [0u8; 512];
    let name = name.as_bytes();
    let n = name.len().min(99);
    h[..n].copy_from_slice(&name[..n]);
    octal_field(&mut h[100..108], u64::from(mode)); // mode
    octal_field(&mut h[108..116], 0); // uid
    octal_field(&mut h[116..124], 0); // gid
    octal_field(&mut h[124..136], data.len() as u64); // size
    octal_field(&mut h[136..148], 0); // mtime: fixed, so the bytes never change
    h[156] = b'0'; // typeflag: regular file
    h[257..263].copy_from_slice(b"ustar\0"); // magic
    h[263..265].copy_from_slice(b"00"); // version
    h[265..269].copy_from_slice(b"root"); // uname
    h[297..301].copy_from_slice(b"root"); // gname
                                          // The checksum is computed with its own field as eight spaces, then written as six octal
                                          // digits, a NUL and a space.
    h[148..156].fill(b' ');
    let sum: u32 = h.iter().map(|&b| u32::from(b)).sum();
    let digits = format!("{sum:06o}");
    h[148..154].copy_from_slice(&digits.as_bytes()[digits.len() - 6..]);
    h[154] = 0;
    h[155] = b' ';

    let padded = data.len().div_ceil(512) * 512;
    let mut out = Vec::with_capacity(512 + padded + 1024);
    out.extend_from_slice(&h);
    out.extend_from_slice(data);
    out.resize(512 + padded + 1024, 0);
    out
}

/// Writes `v` in octal, zero-padded, NUL-terminated, filling `field`.
fn octal_field(field: &mut [u8], v: u64) {
    let width = field.len() - 1;
    let s = format!("{v:0width$o}");
    let s = &s.as_bytes()[s.len().saturating_sub(width)..];
    field[..width].copy_from_slice(s);
    field[width] = 0;
}

/// The root filesystem of the pause image for `arch`: `pause`, mode 0755.
pub fn pause_rootfs_tar(arch: Arch) -> Vec<u8> {
    tar_one_file(PAUSE_PATH.trim_start_matches('/'), 0o755, &pause_elf(arch))
}

/// Makes sure [`PAUSE_IMAGE`] exists on the engine, once per agent process. Cheap to clone;
/// clones share the outcome.
#[derive(Debug, Clone, Default)]
pub struct PauseImage {
    ready: Arc<OnceCell<()>>,
}

impl PauseImage {
    pub fn new() -> Self {
        Self::default()
    }

    /// Inspects the image and imports it when it is missing. Concurrent callers wait for the
    /// one attempt under way; after a success every call returns at once; after a failure the
    /// next call tries again.
    pub async fn ensure(&self, docker: &DockerDriver) -> Result<(), DockerError> {
        self.ready
            .get_or_try_init(|| async {
                if docker.image_present(PAUSE_IMAGE).await? {
                    return Ok(());
                }
                let engine_arch = docker.engine_arch().await?;
                let arch = Arch::parse(&engine_arch).ok_or_else(|| {
                    DockerError::Other(format!(
                        "no pause executable for the engine's architecture {engine_arch} (Gantry generates one for amd64 and arm64)"
                    ))
                })?;
                let started = std::time::Instant::now();
                docker
                    .import_image(
                        pause_rootfs_tar(arch),
                        PAUSE_REPO,
                        PAUSE_TAG,
                        vec![format!("CMD [\"{PAUSE_PATH}\"]")],
                    )
                    .await?;
                if !docker.image_present(PAUSE_IMAGE).await? {
                    return Err(DockerError::Other(format!(
                        "{PAUSE_IMAGE} is still missing after importing it"
                    )));
                }
                tracing::info!(image = PAUSE_IMAGE, arch = ?arch, took = ?started.elapsed(), "imported the pause image");
                Ok(())
            })
            .await
            .map(|_| ())
    }

    /// Whether [`PauseImage::ensure`] has succeeded in this process.
    pub fn is_ready(&self) -> bool {
        self.ready.initialized()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn u16_at(b: &[u8], at: usize) -> u16 {
        u16::from_le_bytes([b[at], b[at + 1]])
    }
    fn u32_at(b: &[u8], at: usize) -> u32 {
        u32::from_le_bytes(b[at..at + 4].try_into().unwrap())
    }
    fn u64_at(b: &[u8], at: usize) -> u64 {
        u64::from_le_bytes(b[at..at + 8].try_into().unwrap())
    }

    #[test]
    fn elf_headers_describe_one_loadable_executable_segment() {
        for (arch, machine) in [(Arch::X86_64, 62), (Arch::Aarch64, 183)] {
            let b = pause_elf(arch);
            assert_eq!(&b[..4], b"\x7fELF");
            assert_eq!(b[4], 2, "ELFCLASS64");
            assert_eq!(b[5], 1, "little-endian");
            assert_eq!(b[6], 1, "EV_CURRENT");
            assert_eq!(u16_at(&b, 16), 2, "ET_EXEC");
            assert_eq!(u16_at(&b, 18), machine);
            assert_eq!(u32_at(&b, 20), 1);
            let entry = u64_at(&b, 24);
            assert_eq!(entry, LOAD_ADDR + 120, "entry right after the headers");
            assert_eq!(u64_at(&b, 32), 64, "program headers follow the ELF header");
            assert_eq!(u64_at(&b, 40), 0, "no section headers");
            assert_eq!(u16_at(&b, 52), 64);
            assert_eq!(u16_at(&b, 54), 56);
            assert_eq!(u16_at(&b, 56), 1, "one program header");
            assert_eq!(u16_at(&b, 60), 0);
            // PT_LOAD, R+X, the whole file at LOAD_ADDR.
            let ph = 64;
            assert_eq!(u32_at(&b, ph), 1);
            assert_eq!(u32_at(&b, ph + 4), 5);
            assert_eq!(u64_at(&b, ph + 8), 0);
            assert_eq!(u64_at(&b, ph + 16), LOAD_ADDR);
            assert_eq!(u64_at(&b, ph + 32), b.len() as u64);
            assert_eq!(u64_at(&b, ph + 40), b.len() as u64);
            let align = u64_at(&b, ph + 48);
            assert!(align.is_power_of_two() && LOAD_ADDR.is_multiple_of(align));
            assert_eq!(&b[120..], arch.code().as_slice());
        }
    }

    #[test]
    fn machine_code_loops_around_the_blocking_syscall() {
        // x86_64: mov eax, 34 (pause); syscall; jmp back to the start.
        let x = Arch::X86_64.code();
        assert_eq!(&x[..5], &[0xb8, 34, 0, 0, 0]);
        assert_eq!(&x[5..7], &[0x0f, 0x05]);
        assert_eq!(x[7], 0xeb);
        assert_eq!(
            x.len() as i64 + i64::from(x[8] as i8),
            0,
            "jumps to offset 0"
        );
        // aarch64: x0..x3 zeroed, x8 = 73 (ppoll), svc #0, b back to the start.
        let a = Arch::Aarch64.code();
        let words: Vec<u32> = a
            .chunks(4)
            .map(|c| u32::from_le_bytes(c.try_into().unwrap()))
            .collect();
        for (reg, w) in words[..4].iter().enumerate() {
            assert_eq!(*w, 0xd280_0000 | reg as u32, "movz x{reg}, #0");
        }
        assert_eq!((words[4] >> 5) & 0xffff, 73, "movz x8, #73");
        assert_eq!(words[4] & 0x1f, 8);
        assert_eq!(words[5], 0xd400_0001, "svc #0");
        assert_eq!(words[6] >> 26, 0b000101, "b");
        let imm26 = ((words[6] & 0x03ff_ffff) << 6) as i32 >> 6;
        assert_eq!(imm26, -6, "branches back six instructions");
    }

    #[test]
    fn tar_holds_one_executable_file() {
        let elf = pause_elf(Arch::X86_64);
        let t = pause_rootfs_tar(Arch::X86_64);
        assert_eq!(t.len() % 512, 0);
        assert_eq!(
            t.len(),
            512 + 512 + 1024,
            "header, one data block, end of archive"
        );
        let h = &t[..512];
        let field = |from: usize, to: usize| {
            std::str::from_utf8(&h[from..to])
                .unwrap()
                .trim_end_matches(['\0', ' '])
                .to_string()
        };
        assert_eq!(field(0, 100), "pause");
        assert_eq!(field(100, 108), "0000755");
        assert_eq!(field(108, 116), "0000000");
        assert_eq!(
            u64::from_str_radix(&field(124, 136), 8).unwrap(),
            elf.len() as u64
        );
        assert_eq!(h[156], b'0', "regular file");
        assert_eq!(&h[257..263], b"ustar\0");
        assert_eq!(&h[263..265], b"00");
        // The checksum: the header's bytes with the checksum field counted as spaces.
        let stored = u32::from_str_radix(&field(148, 156), 8).unwrap();
        let computed: u32 = h
            .iter()
            .enumerate()
            .map(|(i, &b)| {
                if (148..156).contains(&i) {
                    32
                } else {
                    u32::from(b)
                }
            })
            .sum();
        assert_eq!(stored, computed);
        assert_eq!((h[154], h[155]), (0, b' '));
        // The data, then zero padding and the two zero blocks.
        assert_eq!(&t[512..512 + elf.len()], elf.as_slice());
        assert!(t[512 + elf.len()..].iter().all(|&b| b == 0));
    }

    #[test]
    fn tar_agrees_with_the_system_tar() {
        // Cross-check with GNU/BSD tar when the host has one.
        let Ok(out) = std::process::Command::new("tar").arg("--version").output() else {
            return;
        };
        if !out.status.success() {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let archive = dir.path().join("pause.tar");
        std::fs::write(&archive, pause_rootfs_tar(Arch::X86_64)).unwrap();
        let listing = std::process::Command::new("tar")
            .arg("-tvf")
            .arg(&archive)
            .output()
            .unwrap();
        assert!(listing.status.success(), "{listing:?}");
        let text = String::from_utf8_lossy(&listing.stdout);
        assert!(text.starts_with("-rwxr-xr-x"), "{text}");
        assert!(text.trim_end().ends_with("pause"), "{text}");
    }

    #[test]
    fn architectures_by_docker_and_rust_names() {
        assert_eq!(Arch::parse("amd64"), Some(Arch::X86_64));
        assert_eq!(Arch::parse("x86_64"), Some(Arch::X86_64));
        assert_eq!(Arch::parse("arm64"), Some(Arch::Aarch64));
        assert_eq!(Arch::parse("aarch64"), Some(Arch::Aarch64));
        assert_eq!(Arch::parse("s390x"), None);
    }

    /// On an x86_64 Linux host the generated executable really runs and blocks.
    #[cfg(all(target_arch = "x86_64", target_os = "linux"))]
    #[test]
    fn the_x86_64_executable_runs_and_blocks() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pause");
        std::fs::write(&path, pause_elf(Arch::X86_64)).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        // (Another test thread forking while the file was open for writing makes exec fail
        // with ETXTBSY for a moment.)
        let mut attempts = 0;
        let mut child = loop {
            match std::process::Command::new(&path).spawn() {
                Ok(c) => break c,
                Err(e) if e.raw_os_error() == Some(26) && attempts < 50 => {
                    attempts += 1;
                    std::thread::sleep(std::time::Duration::from_millis(10));
                }
                Err(e) => panic!("cannot run the pause executable: {e}"),
            }
        };
        // Still running a moment later (it would exit or crash at once otherwise).
        let until = std::time::Instant::now() + std::time::Duration::from_millis(300);
        while std::time::Instant::now() < until {
            assert!(child.try_wait().unwrap().is_none(), "pause exited");
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        child.kill().unwrap();
        let status = child.wait().unwrap();
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(status.signal(), Some(9));
    }
}
