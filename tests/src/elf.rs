//! How an ELF executable is linked, read from its program headers: the dynamic loader it
//! asks for (`PT_INTERP`) and the shared libraries it needs (`DT_NEEDED` in `PT_DYNAMIC`).
//! A static-pie executable keeps a `PT_DYNAMIC` for its own relocations, but needs nothing.

/// What the loader would have to provide.
#[derive(Debug, PartialEq, Eq)]
pub struct Linkage {
    /// `PT_INTERP`: the dynamic loader, e.g. `/lib64/ld-linux-x86-64.so.2`.
    pub interpreter: Option<String>,
    /// How many `DT_NEEDED` entries (shared libraries) the dynamic section lists.
    pub needed: usize,
}

impl Linkage {
    /// Runs without any library or loader from the system.
    pub fn is_static(&self) -> bool {
        self.interpreter.is_none() && self.needed == 0
    }
}

const PT_DYNAMIC: u32 = 2;
const PT_INTERP: u32 = 3;
const DT_NEEDED: u64 = 1;

/// Read the linkage of a 64-bit little-endian ELF file (x86_64); `Err` says what is odd.
pub fn linkage(elf: &[u8]) -> Result<Linkage, String> {
    if elf.get(..6) != Some(b"\x7fELF\x02\x01") {
        return Err("not a 64-bit little-endian ELF file".into());
    }
    let phoff = u64_at(elf, 0x20)? as usize;
    let phentsize = u16_at(elf, 0x36)? as usize;
    let phnum = u16_at(elf, 0x38)? as usize;
    let mut linkage = Linkage { interpreter: None, needed: 0 };
    for i in 0..phnum {
        let ph = phoff + i * phentsize;
        let (offset, size) = (u64_at(elf, ph + 8)? as usize, u64_at(elf, ph + 32)? as usize);
        let body = elf.get(offset..offset + size).ok_or("a program header points past the end of the file")?;
        match u32_at(elf, ph)? {
            PT_INTERP => linkage.interpreter = Some(String::from_utf8_lossy(body).trim_end_matches('\0').to_string()),
            PT_DYNAMIC => {
                // Elf64_Dyn entries (tag, value) up to DT_NULL.
                let tags = body.chunks_exact(16).map(|d| u64::from_le_bytes(d[..8].try_into().expect("8 bytes")));
                linkage.needed = tags.take_while(|t| *t != 0).filter(|t| *t == DT_NEEDED).count();
            }
            _ => {}
        }
    }
    Ok(linkage)
}

fn u16_at(b: &[u8], at: usize) -> Result<u16, String> {
    Ok(u16::from_le_bytes(b.get(at..at + 2).ok_or("truncated ELF header")?.try_into().expect("2 bytes")))
}

fn u32_at(b: &[u8], at: usize) -> Result<u32, String> {
    Ok(u32::from_le_bytes(b.get(at..at + 4).ok_or("truncated ELF header")?.try_into().expect("4 bytes")))
}

fn u64_at(b: &[u8], at: usize) -> Result<u64, String> {
    Ok(u64::from_le_bytes(b.get(at..at + 8).ok_or("truncated ELF header")?.try_into().expect("8 bytes")))
}
