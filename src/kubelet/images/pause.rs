//! The pause image k1s carries: a static executable of a few instructions that blocks forever,
//! written as a minimal ELF here rather than downloaded, so no registry is ever needed. It holds
//! the pod's namespaces; containerd stops it with SIGKILL (as PID 1 of its PID namespace it
//! ignores signals it has no handler for).

use super::oci::{self, Entry, RunConfig};
use super::ImageError;

/// Where the program's one loadable segment is mapped.
const BASE: u64 = 0x40_0000;
const EHDR: usize = 64;
const PHDR: usize = 56;

/// The machine code: block in a syscall, and again if a signal ever wakes it.
fn code() -> Result<(u16, &'static [u8]), ImageError> {
    match std::env::consts::ARCH {
        // loop: mov eax, 34 (pause); syscall; jmp loop
        "x86_64" => Ok((62, &[0xb8, 0x22, 0, 0, 0, 0x0f, 0x05, 0xeb, 0xf7])),
        // loop: mov x8, #73 (ppoll); mov x0..x3, #0; svc #0; b loop
        "aarch64" => Ok((
            183,
            &[
                0x28, 0x09, 0x80, 0xd2, // mov x8, #73
                0x00, 0x00, 0x80, 0xd2, // mov x0, #0
                0x01, 0x00, 0x80, 0xd2, // mov x1, #0
                0x02, 0x00, 0x80, 0xd2, // mov x2, #0
                0x03, 0x00, 0x80, 0xd2, // mov x3, #0
                0x01, 0x00, 0x00, 0xd4, // svc #0
                0xfa, 0xff, 0xff, 0x17, // b loop
            ],
        )),
        other => Err(ImageError::Unsupported(format!(
            "k1s carries no pause program for {other}; import a pause image as {}",
            crate::kubelet::containerd::config::PAUSE_IMAGE
        ))),
    }
}

/// The pause program: an ELF64 executable with one read+execute segment.
pub fn program() -> Result<Vec<u8>, ImageError> {
    let (machine, code) = code()?;
    let entry = BASE + (EHDR + PHDR) as u64;
    let total = (EHDR + PHDR + code.len()) as u64;
    let mut elf = Vec::with_capacity(total as usize);
    // e_ident: magic, 64-bit, little-endian, version 1, System V ABI.
    elf.extend_from_slice(&[0x7f, b'E', b'L', b'F', 2, 1, 1, 0]);
    elf.extend_from_slice(&[0; 8]);
    elf.extend_from_slice(&2u16.to_le_bytes()); // e_type: executable
    elf.extend_from_slice(&machine.to_le_bytes());
    elf.extend_from_slice(&1u32.to_le_bytes()); // e_version
    elf.extend_from_slice(&entry.to_le_bytes());
    elf.extend_from_slice(&(EHDR as u64).to_le_bytes()); // e_phoff
    elf.extend_from_slice(&0u64.to_le_bytes()); // e_shoff
    elf.extend_from_slice(&0u32.to_le_bytes()); // e_flags
    elf.extend_from_slice(&(EHDR as u16).to_le_bytes());
    elf.extend_from_slice(&(PHDR as u16).to_le_bytes());
    elf.extend_from_slice(&1u16.to_le_bytes()); // e_phnum
    elf.extend_from_slice(&[0; 6]); // e_shentsize, e_shnum, e_shstrndx
                                    // The program header: PT_LOAD, R+X, the whole file at BASE.
    elf.extend_from_slice(&1u32.to_le_bytes());
    elf.extend_from_slice(&5u32.to_le_bytes());
    elf.extend_from_slice(&0u64.to_le_bytes()); // p_offset
    elf.extend_from_slice(&BASE.to_le_bytes()); // p_vaddr
    elf.extend_from_slice(&BASE.to_le_bytes()); // p_paddr
    elf.extend_from_slice(&total.to_le_bytes()); // p_filesz
    elf.extend_from_slice(&total.to_le_bytes()); // p_memsz
    elf.extend_from_slice(&0x1000u64.to_le_bytes()); // p_align
    elf.extend_from_slice(code);
    Ok(elf)
}

/// The pause image as an OCI layout tarball named `name`.
pub fn image(name: &str) -> Result<Vec<u8>, ImageError> {
    let layer = oci::layer(&[Entry::File {
        path: "pause".into(),
        mode: 0o755,
        data: program()?,
    }])?;
    let run = RunConfig {
        entrypoint: vec!["/pause".into()],
        ..Default::default()
    };
    oci::image_layout(name, &run, &layer)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[cfg(target_arch = "x86_64")]
    fn the_pause_program_runs_and_blocks() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("pause");
        std::fs::write(&path, program().expect("program")).expect("write");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        let mut child = std::process::Command::new(&path).spawn().expect("exec");
        std::thread::sleep(std::time::Duration::from_millis(200));
        assert!(child.try_wait().expect("wait").is_none(), "still blocked");
        child.kill().expect("kill");
        let status = child.wait().expect("wait");
        assert!(!status.success());
    }
}
