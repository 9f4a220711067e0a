//! A small ELF reader for the facts the checks need: class, byte order, machine, loader
//! (`PT_INTERP`), and from the dynamic section `DT_NEEDED`, `DT_SONAME`, `DT_RPATH`/`DT_RUNPATH`
//! and the GNU version sections (`.gnu.version_r` needed, `.gnu.version_d` defined).
//!
//! Written here rather than taken from `goblin`/`object` because the checks read ELF files out
//! of tar streams: the parser works on whatever byte regions the caller has (a prefix of the
//! stream, then forward reads) and says which region it needs next ([`Parse::Need`]), so a 250 MB
//! `chrome` is never held in memory. It only follows the program headers and the dynamic
//! section (no section headers), the way `ld.so` does, so stripped files read the same.

use serde::{Deserialize, Serialize};

/// The ELF facts the checks use. Serialised into the base-layer cache.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ElfFacts {
    /// 64-bit (`ELFCLASS64`).
    pub class64: bool,
    /// `e_machine`.
    pub machine: u16,
    /// `e_type` (2 = executable, 3 = shared object or PIE).
    pub kind: u16,
    /// The program interpreter (`PT_INTERP`), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interp: Option<String>,
    /// `DT_SONAME`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub soname: Option<String>,
    /// `DT_NEEDED`, in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub needed: Vec<String>,
    /// `DT_RPATH` entries.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rpath: Vec<String>,
    /// `DT_RUNPATH` entries.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub runpath: Vec<String>,
    /// Version names this object defines (`.gnu.version_d`, base entry excluded).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub defines: Vec<String>,
    /// Versions needed, per library (`.gnu.version_r`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub needs: Vec<VersionNeed>,
}

/// The versions one object needs from one library.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct VersionNeed {
    /// The library's soname (`vn_file`).
    pub file: String,
    /// Version names (`vna_name`), e.g. `GLIBC_2.34`.
    pub versions: Vec<String>,
}

/// Outcome of one parse attempt over the regions available.
#[derive(Debug, PartialEq, Eq)]
pub enum Parse {
    /// The facts.
    Done(ElfFacts),
    /// Bytes `[offset, offset + len)` of the file are needed; add them and parse again.
    Need(u64, u64),
    /// Not a readable ELF file.
    Invalid(&'static str),
}

/// The four bytes every ELF file starts with.
pub const MAGIC: &[u8; 4] = b"\x7fELF";

const PT_LOAD: u32 = 1;
const PT_DYNAMIC: u32 = 2;
const PT_INTERP: u32 = 3;
const DT_NULL: u64 = 0;
const DT_NEEDED: u64 = 1;
const DT_STRTAB: u64 = 5;
const DT_STRSZ: u64 = 10;
const DT_SONAME: u64 = 14;
const DT_RPATH: u64 = 15;
const DT_RUNPATH: u64 = 29;
const DT_VERDEF: u64 = 0x6fff_fffc;
const DT_VERDEFNUM: u64 = 0x6fff_fffd;
const DT_VERNEED: u64 = 0x6fff_fffe;
const DT_VERNEEDNUM: u64 = 0x6fff_ffff;
const VER_FLG_BASE: u16 = 1;
/// Smallest region worth reading when the parser asks for more.
pub const MIN_READ: u64 = 64 << 10;
/// Cap on loops over version records (a corrupt file must not spin).
const MAX_RECORDS: usize = 4096;

/// Byte regions of a file, by offset.
#[derive(Default, Debug)]
pub struct Regions(Vec<(u64, Vec<u8>)>);

impl Regions {
    /// Regions starting with the file's first bytes.
    pub fn new(prefix: Vec<u8>) -> Self {
        Regions(vec![(0, prefix)])
    }

    /// Adds the bytes found at `offset`.
    pub fn add(&mut self, offset: u64, bytes: Vec<u8>) {
        self.0.push((offset, bytes));
    }

    fn get(&self, off: u64, len: u64) -> Result<&[u8], Step> {
        for (start, b) in &self.0 {
            if off >= *start && off.saturating_add(len) <= start + b.len() as u64 {
                let s = (off - start) as usize;
                return Ok(&b[s..s + len as usize]);
            }
        }
        Err(Step::Need(off, len))
    }
}

/// Why a parse step stopped.
enum Step {
    Need(u64, u64),
    Invalid(&'static str),
}

/// Reads numbers in the file's byte order and word size.
struct Reader<'a> {
    r: &'a Regions,
    le: bool,
    is64: bool,
}

impl Reader<'_> {
    fn bytes(&self, off: u64, len: u64) -> Result<&[u8], Step> {
        self.r.get(off, len)
    }
    fn u16(&self, off: u64) -> Result<u16, Step> {
        let b = self.bytes(off, 2)?;
        let a = [b[0], b[1]];
        Ok(if self.le {
            u16::from_le_bytes(a)
        } else {
            u16::from_be_bytes(a)
        })
    }
    fn u32(&self, off: u64) -> Result<u32, Step> {
        let b = self.bytes(off, 4)?;
        let a = [b[0], b[1], b[2], b[3]];
        Ok(if self.le {
            u32::from_le_bytes(a)
        } else {
            u32::from_be_bytes(a)
        })
    }
    fn u64(&self, off: u64) -> Result<u64, Step> {
        let b = self.bytes(off, 8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(if self.le {
            u64::from_le_bytes(a)
        } else {
            u64::from_be_bytes(a)
        })
    }
    /// A word: 8 bytes in ELF64, 4 in ELF32.
    fn word(&self, off: u64) -> Result<u64, Step> {
        if self.is64 {
            self.u64(off)
        } else {
            self.u32(off).map(u64::from)
        }
    }
    /// A NUL-terminated string at `off` (asks for up to 4 KiB more when it runs past the data).
    fn cstr(&self, off: u64, limit: u64) -> Result<String, Step> {
        for (start, b) in &self.r.0 {
            if off >= *start && off < start + b.len() as u64 {
                let s = &b[(off - start) as usize..];
                if let Some(n) = s.iter().position(|&c| c == 0) {
                    return Ok(String::from_utf8_lossy(&s[..n]).into_owned());
                }
            }
        }
        Err(Step::Need(off, 4096.max(limit).min(1 << 20)))
    }
}

struct Segment {
    kind: u32,
    offset: u64,
    vaddr: u64,
    filesz: u64,
}

/// Parses what `regions` hold; see [`Parse`].
pub fn parse(regions: &Regions) -> Parse {
    match parse_inner(regions) {
        Ok(f) => Parse::Done(f),
        Err(Step::Need(o, l)) => Parse::Need(o, l),
        Err(Step::Invalid(why)) => Parse::Invalid(why),
    }
}

fn parse_inner(regions: &Regions) -> Result<ElfFacts, Step> {
    let ident = regions.get(0, 16).map_err(|_| Step::Invalid("too short"))?;
    if &ident[..4] != MAGIC {
        return Err(Step::Invalid("no ELF magic"));
    }
    let is64 = match ident[4] {
        1 => false,
        2 => true,
        _ => return Err(Step::Invalid("unknown ELF class")),
    };
    let le = match ident[5] {
        1 => true,
        2 => false,
        _ => return Err(Step::Invalid("unknown byte order")),
    };
    let r = Reader {
        r: regions,
        le,
        is64,
    };
    let kind = r.u16(16)?;
    let machine = r.u16(18)?;
    let (phoff, phentsize, phnum) = if is64 {
        (r.u64(32)?, r.u16(54)?, r.u16(56)?)
    } else {
        (u64::from(r.u32(28)?), r.u16(42)?, r.u16(44)?)
    };
    if phnum > 0 && u64::from(phentsize) < if is64 { 56 } else { 32 } {
        return Err(Step::Invalid("bad program header size"));
    }
    let mut segments = Vec::with_capacity(phnum as usize);
    for i in 0..u64::from(phnum) {
        let p = phoff + i * u64::from(phentsize);
        let seg = if is64 {
            Segment {
                kind: r.u32(p)?,
                offset: r.u64(p + 8)?,
                vaddr: r.u64(p + 16)?,
                filesz: r.u64(p + 32)?,
            }
        } else {
            Segment {
                kind: r.u32(p)?,
                offset: u64::from(r.u32(p + 4)?),
                vaddr: u64::from(r.u32(p + 8)?),
                filesz: u64::from(r.u32(p + 16)?),
            }
        };
        segments.push(seg);
    }
    let mut facts = ElfFacts {
        class64: is64,
        machine,
        kind,
        ..Default::default()
    };
    if let Some(s) = segments.iter().find(|s| s.kind == PT_INTERP) {
        facts.interp = Some(r.cstr(s.offset, s.filesz)?);
    }
    let Some(dynamic) = segments.iter().find(|s| s.kind == PT_DYNAMIC) else {
        return Ok(facts);
    };
    let entsize = if is64 { 16 } else { 8 };
    let mut tags = Vec::new();
    let mut off = dynamic.offset;
    while off + entsize <= dynamic.offset + dynamic.filesz {
        let tag = r.word(off)?;
        let val = r.word(off + entsize / 2)?;
        if tag == DT_NULL {
            break;
        }
        tags.push((tag, val));
        off += entsize;
    }
    let tag = |t: u64| tags.iter().find(|(k, _)| *k == t).map(|(_, v)| *v);
    let to_offset = |vaddr: u64| {
        segments
            .iter()
            .find(|s| s.kind == PT_LOAD && vaddr >= s.vaddr && vaddr < s.vaddr + s.filesz)
            .map(|s| vaddr - s.vaddr + s.offset)
            .ok_or(Step::Invalid(
                "dynamic address outside every loaded segment",
            ))
    };
    let Some(strtab) = tag(DT_STRTAB) else {
        return Ok(facts);
    };
    let strtab = to_offset(strtab)?;
    let strsz = tag(DT_STRSZ).unwrap_or(4096);
    if strsz <= 4 << 20 {
        r.bytes(strtab, strsz)?;
    }
    let string = |i: u64| r.cstr(strtab + i, strsz.saturating_sub(i));
    for &(t, v) in &tags {
        match t {
            DT_NEEDED => facts.needed.push(string(v)?),
            DT_SONAME => facts.soname = Some(string(v)?),
            DT_RPATH => facts.rpath = split_path(&string(v)?),
            DT_RUNPATH => facts.runpath = split_path(&string(v)?),
            _ => {}
        }
    }
    if let (Some(addr), Some(num)) = (tag(DT_VERNEED), tag(DT_VERNEEDNUM)) {
        let mut p = to_offset(addr)?;
        for _ in 0..num.min(MAX_RECORDS as u64) {
            let cnt = r.u16(p + 2)?;
            let file = string(u64::from(r.u32(p + 4)?))?;
            let mut a = p + u64::from(r.u32(p + 8)?);
            let mut versions = Vec::new();
            for _ in 0..cnt.min(MAX_RECORDS as u16) {
                versions.push(string(u64::from(r.u32(a + 8)?))?);
                match r.u32(a + 12)? {
                    0 => break,
                    n => a += u64::from(n),
                }
            }
            facts.needs.push(VersionNeed { file, versions });
            match r.u32(p + 12)? {
                0 => break,
                n => p += u64::from(n),
            }
        }
    }
    if let (Some(addr), Some(num)) = (tag(DT_VERDEF), tag(DT_VERDEFNUM)) {
        let mut p = to_offset(addr)?;
        for _ in 0..num.min(MAX_RECORDS as u64) {
            let flags = r.u16(p + 2)?;
            let aux = p + u64::from(r.u32(p + 12)?);
            if flags & VER_FLG_BASE == 0 {
                facts.defines.push(string(u64::from(r.u32(aux)?))?);
            }
            match r.u32(p + 16)? {
                0 => break,
                n => p += u64::from(n),
            }
        }
    }
    Ok(facts)
}

fn split_path(s: &str) -> Vec<String> {
    s.split(':')
        .filter(|p| !p.is_empty())
        .map(str::to_string)
        .collect()
}

/// Parses a file by random access: `read_at(offset, len)` returns the bytes there (fewer at the
/// end of the file). Reads the first 64 KiB, then only the regions the parser asks for (at
/// least [`MIN_READ`] bytes each).
pub fn parse_with(mut read_at: impl FnMut(u64, u64) -> std::io::Result<Vec<u8>>) -> Parse {
    let mut regions = match read_at(0, 64 << 10) {
        Ok(b) => Regions::new(b),
        Err(_) => return Parse::Invalid("unreadable"),
    };
    for _ in 0..64 {
        match parse(&regions) {
            Parse::Need(off, len) => match read_at(off, len.max(MIN_READ)) {
                Ok(b) if !b.is_empty() => regions.add(off, b),
                _ => return Parse::Invalid("truncated"),
            },
            done => return done,
        }
    }
    Parse::Invalid("too many regions")
}

/// The family and numbers of a version name: `GLIBC_2.36` → (`GLIBC`, [2, 36]).
pub fn split_version(v: &str) -> Option<(&str, Vec<u32>)> {
    let (family, num) = v.rsplit_once('_')?;
    let nums = num
        .split('.')
        .map(|n| n.parse().ok())
        .collect::<Option<Vec<u32>>>()?;
    Some((family, nums))
}

/// The highest version of `family` among `names` (e.g. the newest `GLIBC_*` a libc defines).
pub fn highest<'a>(names: impl IntoIterator<Item = &'a String>, family: &str) -> Option<String> {
    names
        .into_iter()
        .filter_map(|n| {
            split_version(n)
                .filter(|(f, _)| *f == family)
                .map(|(_, v)| (v, n))
        })
        .max()
        .map(|(_, n)| n.clone())
}

/// The name `e_machine` has for an OCI architecture (`amd64` → 62).
pub fn machine_for_arch(arch: &str) -> Option<u16> {
    Some(match arch {
        "amd64" => 62,
        "arm64" => 183,
        "386" => 3,
        "arm" => 40,
        "ppc64le" | "ppc64" => 21,
        "s390x" => 22,
        "riscv64" => 243,
        "mips64le" | "mips64" | "mipsle" | "mips" => 8,
        "loong64" => 258,
        _ => return None,
    })
}

/// A readable name of an `e_machine` value.
pub fn machine_name(m: u16) -> String {
    match m {
        62 => "x86-64".into(),
        183 => "AArch64".into(),
        3 => "i386".into(),
        40 => "ARM".into(),
        21 => "PowerPC64".into(),
        22 => "s390".into(),
        243 => "RISC-V".into(),
        other => format!("e_machine {other}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host_file(path: &str) -> Parse {
        use std::os::unix::fs::FileExt;
        let f = std::fs::File::open(path).unwrap();
        parse_with(|off, len| {
            let mut b = vec![0u8; len as usize];
            let n = f.read_at(&mut b, off)?;
            b.truncate(n);
            Ok(b)
        })
    }

    #[test]
    fn reads_a_system_binary_and_libc() {
        let Parse::Done(sh) = host_file("/bin/sh") else {
            panic!("cannot parse /bin/sh")
        };
        assert!(sh.interp.is_some());
        assert!(sh.needed.iter().any(|n| n.starts_with("libc.so")));
        assert!(sh
            .needs
            .iter()
            .any(|n| n.file.starts_with("libc.so")
                && n.versions.iter().any(|v| v.starts_with("GLIBC_"))));
        for libc in [
            "/lib/x86_64-linux-gnu/libc.so.6",
            "/lib/aarch64-linux-gnu/libc.so.6",
        ] {
            if std::path::Path::new(libc).exists() {
                let Parse::Done(f) = host_file(libc) else {
                    panic!("cannot parse {libc}")
                };
                assert_eq!(f.soname.as_deref(), Some("libc.so.6"));
                assert!(highest(&f.defines, "GLIBC").is_some());
            }
        }
    }

    #[test]
    fn asks_for_what_it_lacks_and_refuses_junk() {
        let Parse::Done(_) = host_file("/bin/sh") else {
            panic!()
        };
        let head = std::fs::read("/bin/sh").unwrap()[..64].to_vec();
        assert!(matches!(parse(&Regions::new(head)), Parse::Need(..)));
        assert!(matches!(
            parse(&Regions::new(b"\x7fELF not really".to_vec())),
            Parse::Invalid(_)
        ));
        assert!(matches!(
            parse(&Regions::new(b"#!/bin/sh\n".to_vec())),
            Parse::Invalid(_)
        ));
    }

    #[test]
    fn version_table() {
        assert_eq!(split_version("GLIBC_2.36"), Some(("GLIBC", vec![2, 36])));
        assert_eq!(
            split_version("GLIBCXX_3.4.30"),
            Some(("GLIBCXX", vec![3, 4, 30]))
        );
        assert_eq!(split_version("GLIBC_PRIVATE"), None);
        let names: Vec<String> = ["GLIBC_2.2.5", "GLIBC_2.36", "GLIBC_2.4", "GLIBC_PRIVATE"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        assert_eq!(highest(&names, "GLIBC").as_deref(), Some("GLIBC_2.36"));
    }
}
